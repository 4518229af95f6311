"""GATEAU's measures on the embedded model's own weights, on samples built to differ in one way."""

import numpy as np
import pytest

from judges.gateau import GateauScorer, Measured, Sample, combine
from longform.models.hf_model import load_causal_lm

pytestmark = pytest.mark.embedded  # the model's weights, in llama.cpp or transformers

FACTS = ("Captain Orla Vexmire commanded the freighter Quillon-7, which left Port Tesmar with 4,817 crates"
         " of saffron and a crew of nineteen.")
FILLER = ("The sea was calm for most of the morning. Gulls followed the wake, and the deck smelled of salt"
          " and rope. Work went on as it always did: ropes were checked, coffee was made, the engine hummed"
          " below, and the hours passed slowly under a pale sky.")
LATER_REUSES = ("By evening Orla Vexmire counted the cargo again: 4,817 crates of saffron, all dry. The Quillon-7"
                " would reach harbour by dawn, and Port Tesmar would hear that Captain Orla Vexmire had kept"
                " every one of the 4,817 crates safe aboard the Quillon-7.")
LATER_OWN = ("By evening the cook baked bread in the small galley oven. Flour dusted the table, the loaves rose"
             " slowly in the warmth, and the smell of fresh bread drifted across the deck while the sun went"
             " down behind a long line of grey clouds.")


@pytest.fixture(scope="module")
def scorer():
    model, tokenizer = load_causal_lm("embedded")
    return GateauScorer(model, tokenizer, window=48, max_segments=4, batch_size=4)


@pytest.mark.slow
def test_hmg_is_higher_when_later_paragraphs_need_the_first(scorer):
    reuses = Sample("reuses", "Write a short story about a cargo ship.", (FACTS, FILLER, FILLER, LATER_REUSES))
    own = Sample("own", "Write a short story about a cargo ship.", (FACTS, FILLER, FILLER, LATER_OWN))
    a, b = scorer.measure(reuses), scorer.measure(own)
    # Without the first paragraph in view, the names and numbers are much harder to predict.
    assert a.hmg_raw > b.hmg_raw + 0.2, (a, b)
    assert a.log_ppl_long < a.log_ppl_short
    for m in (a, b):
        assert 0 <= m.cam <= 1 and m.segments == 2 and m.scored_tokens > 0
    assert scorer.cost.tokens["window"] > 0 and scorer.cost.tokens["cam_ppl"] > 0


def test_one_pass_scores_the_later_part_and_reads_the_probes_attention(scorer):
    """A sample that fits: the full pass also reads CAM's attention rows, and gets what the two
    separate passes get (the attention pass stops at the probe; attention is causal). A short probe,
    so the full pass goes on past it."""
    scorer = GateauScorer(scorer.model, scorer.tokenizer, window=48, max_segments=4, cam_probe=64)
    enc = scorer.encode(Sample("reuses", "Write a short story about a cargo ship.",
                               (FACTS, FILLER, FILLER, LATER_REUSES)))
    loss, shares = scorer._full_with_attention(enc)
    assert loss == pytest.approx(scorer.full_nll(enc), abs=1e-4)
    assert np.allclose(shares, scorer._attention_shares(enc), atol=1e-5) and shares.sum() == pytest.approx(1)
    assert len(shares) == len(enc.segments) == 2 and enc.later[1] > scorer._probe(enc)[1]

    # The probe's rows, computed alone, are eager attention's rows: transformers' own weights.
    import torch
    a, b = scorer._probe(enc)
    model = scorer.model
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            every = model(input_ids=torch.tensor([enc.ids[:b]]), output_attentions=True).attentions
    finally:
        model.set_attn_implementation("sdpa")
    rows = torch.stack([layer[0, :, a:b].mean(dim=0) for layer in every])        # (layers, probe, keys)
    eager = np.array([float(rows[:, :, s:e].sum(dim=-1).mean(dim=-1).mean()) for s, e in enc.segments])
    assert np.allclose(shares, eager / eager.sum(), atol=1e-4), (shares, eager / eager.sum())


def test_one_paragraph_answers_are_cut_into_token_runs(scorer):
    enc = scorer.encode(Sample("one", "Describe the sea.", (FILLER + " " + FILLER,)))
    assert len(enc.segments) >= 1 and enc.later[0] > enc.segments[-1][0]
    assert enc.later[1] == len(enc.ids)


def test_combine_normalises_ranks_and_weights():
    measured = [Measured("x", 1.0, 3.0, 0.1, 2, 10), Measured("y", 1.0, 1.5, 0.9, 2, 10),
                Measured("z", 2.0, 2.1, 0.5, 2, 10)]
    scores = combine(measured, alpha=1.0)
    assert [scores[s]["gateau_rank"] for s in "xyz"] == [1, 2, 3]
    only_cam = combine(measured, alpha=0.0)
    assert [only_cam[s]["gateau_rank"] for s in "xyz"] == [3, 1, 2]
    assert all(np.isfinite(v) for s in scores.values() for v in s.values())


def _widths(model) -> list[int]:
    """Record the length of every sequence the model is given (its decoder runs in every pass)."""
    seen: list[int] = []
    model.get_decoder().register_forward_pre_hook(lambda _m, args, kwargs: seen.append(kwargs["input_ids"].shape[1]),
                                    with_kwargs=True)
    return seen


@pytest.fixture(scope="module")
def narrow():
    """The same weights with a 160-token window: a few paragraphs already overflow it."""
    model, tokenizer = load_causal_lm("embedded")
    return GateauScorer(model, tokenizer, window=48, max_segments=4, batch_size=4, max_tokens=160, cam_probe=64)


@pytest.mark.slow
def test_an_answer_several_times_longer_than_max_tokens_is_scored_on_windows(narrow):
    long = Sample("long", "Write a long story about a cargo ship.",
                  (FACTS, *[FILLER] * 8, LATER_REUSES, *[FILLER] * 4, LATER_REUSES))
    enc = narrow.encode(long)
    assert len(enc.ids) > 4 * narrow.max_tokens
    widths = _widths(narrow.model)
    m = narrow.measure(long)
    assert max(widths) <= narrow.max_tokens          # no pass is wider than the model's window
    assert m.scored_tokens == enc.later[1] - enc.later[0] > narrow.max_tokens  # every later token scored
    assert np.isfinite(m.log_ppl_long) and np.isfinite(m.log_ppl_short) and 0 <= m.cam <= 1
    assert narrow.cost.tokens["full"] >= m.scored_tokens


@pytest.mark.slow
def test_a_sample_that_cannot_be_scored_gets_a_row_and_the_selection_goes_on(narrow):
    from judges.gateau_selection import rank
    from longform.config import GateauConfig

    cfg = GateauConfig(max_tokens=160, window=48, max_segments=4, cam_probe=64, top_k=1)
    picks = [(Sample("huge-instruction", "Write about ships. " * 60, (FILLER, FILLER)), "p1"),
             (Sample("a", "Write a short story about a cargo ship.", (FACTS, FILLER, FILLER, LATER_REUSES)), "p2"),
             (Sample("b", "Write a short story about a cargo ship.", (FACTS, FILLER, *[FILLER] * 6, LATER_OWN)), "p3")]
    calls = []
    ranking = rank(picks, lambda: calls.append(1) or narrow, cfg, run_id="r")
    by_sample = {d["sample_id"]: d for d in ranking.decisions}
    assert set(by_sample) == {"huge-instruction", "a", "b"}
    assert not by_sample["huge-instruction"]["selected"]
    assert by_sample["huge-instruction"]["reason"].startswith("not scored by GATEAU: the instruction takes")
    assert sorted(d["selected"] for s, d in by_sample.items() if s != "huge-instruction") == [False, True]
    assert ranking.summary["not_scored"] == 1 and ranking.summary["ranked"] == 2 and calls == [1]

    # Measured once: a rerun with the cache loads no model and decides the same.
    cached = {row["key"]: row for row in ranking.measures}
    again = rank(picks, lambda: pytest.fail("the model was loaded although every measure is cached"), cfg,
                 run_id="r", cached=cached)
    assert again.summary["measured"] == 0 and again.summary["from_cache"] == 3
    assert [(d["sample_id"], d["selected"], d["reason"]) for d in again.decisions] == \
        [(d["sample_id"], d["selected"], d["reason"]) for d in ranking.decisions]


@pytest.mark.slow
def test_bfloat16_measures_what_float32_measures_to_the_third_digit(scorer):
    """[gateau] dtype: the same weights in bfloat16 (`auto` picks it where the CPU computes in it)
    give nearly the same measures, under a key of their own."""
    import torch

    from judges.gateau_selection import measure_key
    from longform.config import GateauConfig
    from longform.models.hf_model import torch_dtype

    # Three paragraphs rather than four: emulated bfloat16 is this CPU's slowest pass, and two
    # segments are scored either way.
    sample = Sample("reuses", "Write a short story about a cargo ship.", (FACTS, FILLER, LATER_REUSES))
    model, tokenizer = load_causal_lm("embedded", dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    half = GateauScorer(model, tokenizer, window=48, max_segments=4, batch_size=4).measure(sample)
    full = scorer.measure(sample)
    assert half.segments == full.segments == 2
    assert abs(half.log_ppl_long - full.log_ppl_long) < 0.02 and abs(half.hmg_raw - full.hmg_raw) < 0.02
    assert abs(half.cam - full.cam) < 0.02
    assert torch_dtype("auto") == (torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32)
    assert measure_key(sample, GateauConfig(dtype="bfloat16")) != measure_key(sample, GateauConfig())
