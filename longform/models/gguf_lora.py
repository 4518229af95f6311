"""A LoRA adapter trained on the embedded model (PEFT safetensors), written as a GGUF LoRA file that
llama.cpp applies on top of the embedded GGUF: Self-Lengthen's retrained roles are then served by
llama.cpp like the base model, at its speed, instead of through transformers (on this project's
2-core CPU, decoding 107 tokens/s instead of about 12).

Written here rather than with llama.cpp's `convert_lora_to_gguf.py`: that script is not part of any
installed package (it sits in llama.cpp's source tree and imports its model converter), while the
mapping it applies for a Llama model is small and is checked against transformers by the tests.
"""

from __future__ import annotations

import json
from pathlib import Path

from longform.errors import LongformError

# PEFT's module names in a Llama decoder layer → llama.cpp's tensor names (gguf's TENSOR_NAMES).
_MODULES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
            "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
            "mlp.down_proj": "ffn_down"}
_PREFIX = "base_model.model.model.layers."


def _permute(rows, n_head: int):
    """llama.cpp's GGUF stores the query and key projections with each head's rotary halves
    interleaved (convert_hf_to_gguf's LlamaModel.permute); a LoRA delta B·A changes rows, so B's
    rows are reordered the same way."""
    return rows.reshape(n_head, 2, rows.shape[0] // n_head // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def lora_gguf(adapter_dir: str | Path) -> Path:
    """`adapter.gguf` beside the adapter, for the GGUF its base model was converted from (the
    embedded model: hf_model.embedded_model_dir), written once: the adapter directory never
    changes, its name being a hash of what it was trained from. What this mapping does not know
    (another architecture, DoRA, a module outside the decoder layers) is refused in one line rather
    than served wrong."""
    adapter_dir = Path(adapter_dir)
    target = adapter_dir / "adapter.gguf"
    if target.exists():
        return target
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    if config.get("use_dora") or config.get("use_rslora") or config.get("modules_to_save"):
        raise LongformError(f"{adapter_dir}: DoRA, rsLoRA and modules_to_save adapters cannot be served by llama.cpp")
    base = Path(config.get("base_model_name_or_path") or "") / "config.json"
    if not base.is_file():
        raise LongformError(f"{adapter_dir}: its base model's config ({base}) is not there")
    model = json.loads(base.read_text(encoding="utf-8"))
    if model.get("model_type") != "llama":
        raise LongformError(f"{adapter_dir}: a {model.get('model_type')} model; adapters are converted for llama only")
    n_head, n_head_kv = model["num_attention_heads"], model.get("num_key_value_heads") or model["num_attention_heads"]
    import gguf
    from safetensors.numpy import load_file

    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    partial = target.with_name(f"{target.name}.partial")
    writer = gguf.GGUFWriter(str(partial), arch="llama")
    writer.add_string(gguf.Keys.General.TYPE, gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config["lora_alpha"]))
    for name in sorted(tensors):
        if not name.endswith(".lora_A.weight"):
            continue
        layer, _, module = name[len(_PREFIX):-len(".lora_A.weight")].partition(".")
        if not name.startswith(_PREFIX) or module not in _MODULES:
            raise LongformError(f"{adapter_dir}: adapter tensor {name} has no llama.cpp counterpart")
        a, b = tensors[name], tensors[name.replace(".lora_A.", ".lora_B.")]
        if module == "self_attn.q_proj":
            b = _permute(b, n_head)
        elif module == "self_attn.k_proj":
            b = _permute(b, n_head_kv)
        weight = f"blk.{int(layer)}.{_MODULES[module]}.weight"
        writer.add_tensor(f"{weight}.lora_a", a.astype("float32"))
        writer.add_tensor(f"{weight}.lora_b", b.astype("float32"))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.rename(target)
    return target
