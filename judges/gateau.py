"""GATEAU-style selection (Si et al., 2024, "GATEAU: Selecting Influential Samples for Long Context
Alignment"), adapted to long *outputs*.

GATEAU ranks samples by how much they depend on long-range context. Our samples have a short
instruction and a long answer, so the long-range context is the answer itself: the later paragraphs
are scored, and the instruction plus the earlier paragraphs are their context.

Homologous Models' Guidance (HMG). The later part's perplexity under a short-context model and under
the long-context model. With one model (the default, and the embedded model's only option) the short
model is the same model with its view limited to the last W tokens; with two configured models the
short one is run the same way with its own window. Per sample we store log PPL_short − log PPL_long
(`gateau_hmg_raw`); like GATEAU's code, the score is norm(PPL_short) − norm(PPL_long) with min-max
normalisation over the samples ranked together.

The windowed pass is blocked: the later part is cut into blocks of W/2 tokens, each fed with the W/2
tokens before it, so every scored token sees between W/2 and W tokens, and all blocks go through the
model in batches. It costs about twice the scored tokens, instead of one pass per token.

Contextual Awareness Measurement (CAM). The context segments are the earlier paragraphs (at most
`max_segments`, merged evenly). Two distributions over them:
- from perplexity: how much seeing segment j (with the instruction) lowers the later part's loss,
  relative to the instruction alone; negative gains count as 0;
- from attention: the attention mass the later part's tokens give each segment's tokens, averaged
  over layers and heads (only those queries' rows are computed; for a sample that fits, in the
  same pass as HMG's long view).
Both look at the first `cam_probe` tokens of the later part (default 256), so each of the
segments' passes is instruction + segment + probe long, not the whole answer.
GATEAU's released code never combines them. We take CAM = Jensen-Shannon divergence between the two,
divided by ln 2 so it lies in [0, 1]: it is symmetric, bounded, and defined when either distribution
has zeros (KL is not), and it is high exactly when the model's attention goes elsewhere than to the
segments that actually help — GATEAU's "hard to attend" samples.

Final score = α · norm(HMG) + (1 − α) · norm(CAM), α = 0.8 by default, both min-max normalised over the
samples ranked together.

Answers longer than the model can take (`max_tokens`, SmolLM2's 8,192 by default) are scored, not
refused: they are what longform exists for. The long pass then slides: the later part is cut into
blocks of half the room left after the instruction, and each block is scored with the instruction
plus as many of the tokens before it as fit. Sliding, rather than scoring only the longest suffix
that fits, keeps every later token scored, so HMG still compares the same tokens under a short and
a long view; and the instruction stays in view because without it the "long" model would lose the
one piece of context every token of the answer depends on. CAM's passes are clipped the same way: a
context segment keeps its tokens nearest the probe, and the attention pass sees the instruction and
the tokens just before the probe (segments out of view get no attention). Only a sample whose
instruction alone leaves no room to score anything is not scored (`NotScorable`, with the reason).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from longform.models.hf_model import attention_rows_only


@dataclass(frozen=True)
class Sample:
    sample_id: str
    instruction: str
    paragraphs: tuple[str, ...]


@dataclass
class Measured:
    sample_id: str
    log_ppl_long: float
    log_ppl_short: float
    cam: float
    segments: int
    scored_tokens: int

    @property
    def hmg_raw(self) -> float:
        return self.log_ppl_short - self.log_ppl_long


@dataclass
class Cost:
    """Tokens through the model and seconds, per pass kind; for tokens/s and the benchmark ratios."""
    tokens: dict[str, int] = field(default_factory=lambda: {"full": 0, "window": 0, "cam_ppl": 0, "cam_attention": 0})
    seconds: dict[str, float] = field(default_factory=lambda: {"full": 0.0, "window": 0.0, "cam_ppl": 0.0,
                                                               "cam_attention": 0.0})

    def add(self, kind: str, tokens: int, seconds: float) -> None:
        self.tokens[kind] += tokens
        self.seconds[kind] += seconds


@dataclass(frozen=True)
class _Encoded:
    ids: list[int]
    prompt_len: int
    segments: list[tuple[int, int]]       # earlier context, [start, end) in ids
    later: tuple[int, int]                # the scored part


class NotScorable(ValueError):
    """The model cannot score this sample at all (its instruction leaves no room); the reason is the message."""


class GateauScorer:
    def __init__(self, model, tokenizer, *, short_model=None, window: int = 512, max_segments: int = 8,
                 batch_size: int = 8, max_tokens: int = 8192, cam_probe: int = 256):
        self.model = model
        self.short_model = short_model or model
        self.tokenizer = tokenizer
        self.window = effective_window(window, max_tokens)
        self.max_segments = max_segments
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.cam_probe = cam_probe
        self.cost = Cost()

    # --- encoding ----------------------------------------------------------------------------------

    def encode(self, sample: Sample) -> _Encoded:
        prompt = self.tokenizer.apply_chat_template([{"role": "user", "content": sample.instruction}],
                                                    add_generation_prompt=True, tokenize=True, return_dict=True)
        ids = list(prompt["input_ids"])
        prompt_len = len(ids)
        pieces = [p for p in sample.paragraphs if p.strip()]
        spans = []
        for k, text in enumerate(pieces):
            piece = self.tokenizer(text + ("\n\n" if k < len(pieces) - 1 else ""), add_special_tokens=False)["input_ids"]
            spans.append((len(ids), len(ids) + len(piece)))
            ids.extend(piece)
        if len(spans) < 2:
            # One paragraph: cut the answer into four equal runs of tokens instead.
            start, end = prompt_len, len(ids)
            step = max(1, (end - start) // 4)
            spans = [(s, min(end, s + step)) for s in range(start, end, step)]
        if self.max_tokens - prompt_len < 16:
            raise NotScorable(f"the instruction takes {prompt_len} of max_tokens {self.max_tokens} tokens;"
                              " no room left to score the answer")
        if not spans:
            raise NotScorable("the answer is empty")
        half = max(1, len(spans) // 2)
        earlier, later = spans[:len(spans) - half], spans[len(spans) - half:]
        return _Encoded(ids, prompt_len, _merge(earlier, self.max_segments), (later[0][0], later[-1][1]))

    # --- passes ------------------------------------------------------------------------------------

    def _nll(self, model, batch: list[list[int]], score_from: list[int], score_to: list[int], kind: str) -> list[float]:
        """Mean negative log-likelihood of tokens [from, to) of each sequence.

        The output layer is applied only where a token is scored: on the model's whole output it is a
        fifth of a small model's compute (49,152 × 576 weights for SmolLM2-135M) and its log-softmax
        a tensor of batch × length × vocabulary floats, for positions the score never reads."""
        width = max(map(len, batch))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([seq + [pad] * (width - len(seq)) for seq in batch])
        mask = torch.tensor([[1] * len(seq) + [0] * (width - len(seq)) for seq in batch])
        started = time.perf_counter()
        out = _losses(model, ids, mask, list(zip(score_from, score_to)))
        self.cost.add(kind, int(mask.sum()), time.perf_counter() - started)
        return out

    def _batched_nll(self, model, jobs: list[tuple[list[int], int, int]], kind: str) -> list[float]:
        """`_nll` of every job, in batches of similar length (a batch is as wide as its longest
        sequence), returned in the jobs' order."""
        order = sorted(range(len(jobs)), key=lambda k: len(jobs[k][0]))
        results: list[float] = [0.0] * len(jobs)
        for i in range(0, len(order), self.batch_size):
            chunk = [jobs[k] for k in order[i:i + self.batch_size]]
            losses = self._nll(model, [j[0] for j in chunk], [j[1] for j in chunk], [j[2] for j in chunk], kind)
            for k, loss in zip(order[i:i + self.batch_size], losses):
                results[k] = loss
        return results

    def full_nll(self, enc: _Encoded) -> float:
        a, b = enc.later
        if b <= self.max_tokens:
            return self._nll(self.model, [enc.ids[:b]], [a], [b], "full")[0]
        # Longer than the model takes: slide (see the module docstring). One window per batch, since
        # each is max_tokens long and its logits alone take max_tokens × vocabulary floats.
        prompt = enc.ids[:enc.prompt_len]
        room = self.max_tokens - len(prompt)
        block = max(1, room // 2)
        losses, weights = [], []
        for t in range(a, b, block):
            end = min(b, t + block)
            start = max(enc.prompt_len, end - room)
            context = prompt + enc.ids[start:end]
            losses += self._nll(self.model, [context], [len(prompt) + t - start], [len(context)], "full")
            weights.append(end - t)
        return float(np.average(losses, weights=weights))

    def windowed_nll(self, enc: _Encoded) -> float:
        a, b = enc.later
        half = max(1, self.window // 2)
        jobs, weights = [], []
        for t in range(a, b, half):
            start = max(0, t - half)
            end = min(b, t + half)
            jobs.append((enc.ids[start:end], t - start, end - start))
            weights.append(end - t)
        losses = self._batched_nll(self.short_model, jobs, "window")
        return float(np.average(losses, weights=weights))

    def cam(self, enc: _Encoded, attention: np.ndarray | None = None) -> float:
        """`attention`: the shares `_attention_shares` gives, when the full pass has read them already."""
        a, b = self._probe(enc)
        later = enc.ids[a:b]
        prompt = enc.ids[:enc.prompt_len]
        jobs = [(prompt + later, len(prompt), len(prompt) + len(later))]
        room = self.max_tokens - len(prompt) - len(later)
        for s, e in enc.segments:
            context = prompt + enc.ids[max(s, e - room):e]  # a segment too long keeps its end, nearest the probe
            jobs.append((context + later, len(context), len(context) + len(later)))
        losses = self._batched_nll(self.model, jobs, "cam_ppl")
        gains = np.maximum(0.0, losses[0] - np.array(losses[1:]))
        p_ppl = gains / gains.sum() if gains.sum() > 0 else np.full(len(gains), 1 / len(gains))
        p_att = attention if attention is not None else self._attention_shares(enc)
        return _jsd(p_ppl, p_att) / math.log(2)

    def _probe(self, enc: _Encoded) -> tuple[int, int]:
        # CAM scores the start of the later part, not all of it: one pass per segment stays short.
        # At most half the room after the instruction, so a segment always fits beside it.
        a, b = enc.later
        return a, min(b, a + min(self.cam_probe, (self.max_tokens - enc.prompt_len) // 2))

    def _attention_shares(self, enc: _Encoded) -> np.ndarray:
        a, b = self._probe(enc)
        # What fits: the instruction, then the tokens just before and in the probe. `cut` is where
        # the view of the answer starts; positions from there on move down by `shift`.
        cut = max(enc.prompt_len, b - (self.max_tokens - enc.prompt_len))
        shift = cut - enc.prompt_len
        view = enc.ids[:enc.prompt_len] + enc.ids[cut:b]
        in_view = {k: (max(s, cut) - shift, e - shift) for k, (s, e) in enumerate(enc.segments)
                   if e > cut}  # a segment wholly before the view gets no attention
        shares, _ = self._attention_pass(view, (a - shift, b - shift), in_view, len(enc.segments))
        return shares

    def _full_with_attention(self, enc: _Encoded) -> tuple[float, np.ndarray]:
        """`full_nll` and `_attention_shares` in one pass, for a sample that fits: the probe's
        attention rows are the same in a pass over the whole sample as in one that stops at the probe
        (attention is causal), so the pass that scores the later part reads them too."""
        a, b = enc.later
        spans = dict(enumerate(enc.segments))
        shares, loss = self._attention_pass(enc.ids[:b], self._probe(enc), spans, len(spans), score=(a, b))
        return loss, shares

    def _attention_pass(self, view: list[int], rows: tuple[int, int], spans: dict[int, tuple[int, int]],
                        n_segments: int, score: tuple[int, int] | None = None) -> tuple[np.ndarray, float | None]:
        """One pass over `view`: the attention the queries at positions `rows` give each segment
        (`spans`: segment → its positions in `view`), averaged over layers and heads, as shares of
        `n_segments`; with `score`, also the mean NLL of view[score[0]:score[1]].

        Only the probe's rows of attention weights are computed (`attention_rows_only`): eager
        attention, the usual way to read them, builds every layer's full length × length matrix and
        took longer than the rest of the pass here."""
        totals = torch.zeros(n_segments)
        layers = 0

        def collect(_module, _inputs, output):
            nonlocal layers
            attended = output[1][0].mean(dim=0)               # (probe queries, keys), heads averaged
            for k, (s, e) in spans.items():
                totals[k] += attended[:, s:e].sum(dim=-1).mean()
            layers += 1
            return (output[0], None, *output[2:])

        attention_modules = [m for name, m in self.model.named_modules() if name.endswith("self_attn")]
        hooks = [m.register_forward_hook(collect) for m in attention_modules]
        started = time.perf_counter()
        try:
            with attention_rows_only(self.model, rows):
                losses = _losses(self.model, torch.tensor([view]), None, [score] if score is not None else [])
        finally:
            for h in hooks:
                h.remove()
        self.cost.add("cam_attention" if score is None else "full", len(view), time.perf_counter() - started)
        shares = (totals / max(layers, 1)).numpy()
        return (shares / shares.sum() if shares.sum() > 0 else np.full(len(shares), 1 / len(shares))), \
            (losses[0] if losses else None)

    def measure(self, sample: Sample, *, with_cam: bool = True) -> Measured:
        enc = self.encode(sample)
        if with_cam and enc.later[1] <= self.max_tokens:
            long, attention = self._full_with_attention(enc)
        else:
            long, attention = self.full_nll(enc), None
        return Measured(sample.sample_id, long, self.windowed_nll(enc),
                        self.cam(enc, attention) if with_cam else float("nan"), len(enc.segments),
                        enc.later[1] - enc.later[0])


def _losses(model, ids, mask, spans: list[tuple[int, int]]) -> list[float]:
    """One forward pass over the rows of `ids`: the mean negative log-likelihood of tokens [a, b) of
    row k, for the k-th (a, b) of `spans` (none: the pass alone, for its side effects). The output
    layer is applied only where a token is scored (see `GateauScorer._nll`)."""
    with torch.no_grad():
        if _plain_head(model):
            hidden = model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
            head = model.get_output_embeddings()
            return [float(torch.nn.functional.cross_entropy(head(hidden[row, a - 1:b - 1]).float(), ids[row, a:b]))
                    for row, (a, b) in enumerate(spans)]
        logits = model(input_ids=ids, attention_mask=mask).logits
        return [float(torch.nn.functional.cross_entropy(logits[row, a - 1:b - 1].float(), ids[row, a:b]))
                for row, (a, b) in enumerate(spans)]


def _plain_head(model) -> bool:
    """Whether the model's logits are its output layer applied to the decoder's last hidden state,
    with nothing after it (Llama, Qwen, Mistral, SmolLM2); models that cap or scale their logits
    (Gemma's soft-capping) are run whole."""
    config = model.config
    return (getattr(config, "final_logit_softcapping", None) is None and getattr(config, "logit_scale", None) is None
            and hasattr(model, "get_decoder") and model.get_output_embeddings() is not None)


def effective_window(window: int, max_tokens: int) -> int:
    """The short view is at most half the long one: a "short" window as long as the model's whole
    window would make HMG compare a view with itself."""
    return min(window, max_tokens // 2)


def _merge(spans: list[tuple[int, int]], most: int) -> list[tuple[int, int]]:
    if len(spans) <= most:
        return spans
    groups = np.array_split(np.arange(len(spans)), most)
    return [(spans[g[0]][0], spans[g[-1]][1]) for g in groups if len(g)]


def _jsd(p: np.ndarray, q: np.ndarray) -> float:
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log(x[nz] / m[nz])))

    return (kl(p) + kl(q)) / 2


def minmax(values: np.ndarray) -> np.ndarray:
    span = values.max() - values.min() if len(values) else 0
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)


def combine(measured: list[Measured], alpha: float) -> dict[str, dict[str, float]]:
    """Per sample: hmg (GATEAU's normalised difference), cam, and the final score and rank."""
    if not measured:
        return {}
    short = minmax(np.exp([m.log_ppl_short for m in measured]))
    long = minmax(np.exp([m.log_ppl_long for m in measured]))
    hmg = short - long
    cam = np.array([m.cam for m in measured])
    final = alpha * minmax(hmg) + (1 - alpha) * minmax(cam)
    order = np.argsort(-final, kind="stable")
    ranks = np.empty(len(order), int)
    ranks[order] = np.arange(1, len(order) + 1)
    return {m.sample_id: {"gateau_hmg": float(hmg[i]), "gateau_hmg_raw": m.hmg_raw, "gateau_cam": float(m.cam),
                          "gateau_score": float(final[i]), "gateau_rank": float(ranks[i])}
            for i, m in enumerate(measured)}
