"""`longform train sft|dpo`: TRL's SFTTrainer / DPOTrainer on an exported dataset.

Hyper-parameters come from the config's `[train.sft]` / `[train.dpo]` tables under TRL's own names
and go to SFTConfig / DPOConfig unchanged, so TRL's documentation is ours. longform only sets what
a CPU smoke run and a reproducible record need (no external loggers, one log line per step, no
intermediate checkpoints) unless the config says otherwise. Each run is a `train_runs` row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Literal

from longform.config import TrainConfig
from longform.errors import LongformError
from longform.export import MANIFEST
from longform.hf_model import resolve
from longform.ids import content_hash

Kind = Literal["sft", "dpo"]
_DEFAULTS = {"report_to": "none", "logging_steps": 1, "save_strategy": "no", "per_device_train_batch_size": 1}


def load_split(dataset_dir: Path, kind: Kind):
    from datasets import load_dataset

    folder = dataset_dir / kind
    files = {split: str(folder / f"{split}.parquet") for split in ("train", "test") if (folder / f"{split}.parquet").exists()}
    if "train" not in files:
        raise LongformError(f"{folder}: no train.parquet; export a run with selected {kind.upper()} rows first"
                            " (`longform export`)")
    return load_dataset("parquet", data_files=files)


def trainer_args(kind: Kind, cfg: TrainConfig, output_dir: Path, max_steps: int | None):
    from trl import DPOConfig, SFTConfig

    cls = SFTConfig if kind == "sft" else DPOConfig
    params = {**_DEFAULTS, **_device_defaults(), **(cfg.sft if kind == "sft" else cfg.dpo)}
    if max_steps is not None:
        params["max_steps"] = max_steps
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise LongformError(f"[train.{kind}] {unknown[0]}: not a {cls.__name__} parameter (TRL's names)")
    try:
        return cls(output_dir=str(output_dir), **params), params
    except (TypeError, ValueError) as e:
        raise LongformError(f"[train.{kind}]: {e}") from None


def _device_defaults() -> dict:
    import torch

    # TRL defaults to bf16, which a CPU-only machine refuses; train in fp32 on the CPU there.
    return {} if torch.cuda.is_available() else {"use_cpu": True, "bf16": False}


def lora_config(cfg: TrainConfig):
    if not cfg.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM")


def dataset_provenance(dataset_dir: Path, kind: Kind) -> dict:
    """The content hash of the split files a training run reads, and the build run they were
    exported from (the export's manifest), so a trained model can be followed back to its samples."""
    digest = hashlib.sha256()
    for path in sorted((dataset_dir / kind).glob("*.parquet")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    try:
        run_id = json.loads((dataset_dir / MANIFEST).read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError):
        run_id = None  # a dataset not written by `longform export`
    return {"dataset_hash": digest.hexdigest(), "source_run_id": run_id}


def train(kind: Kind, *, dataset_dir: Path, model: str, cfg: TrainConfig, output_dir: Path | None,
          max_steps: int | None, record) -> dict:
    """Train and save; `record(row)` is called when the run starts and again when it ends."""
    train_id = f"t-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    output_dir = output_dir or dataset_dir.parent / "models" / f"{dataset_dir.name}-{kind}-{train_id}"
    args, params = trainer_args(kind, cfg, output_dir, max_steps)
    data = load_split(dataset_dir, kind)
    path = resolve(model)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    row = {"train_id": train_id, "kind": kind, "dataset": str(dataset_dir), "model": model, "model_path": path,
           "params": json.dumps(params), "lora": json.dumps(lora_config(cfg).to_dict() if cfg.lora else None,
                                                             default=list),
           "rows": len(data["train"]), "output_dir": str(Path(output_dir).resolve()), "status": "running",
           **dataset_provenance(dataset_dir, kind)}
    record(row)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOTrainer, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(path)
    network = AutoModelForCausalLM.from_pretrained(path)
    common = {"model": network, "args": args, "train_dataset": data["train"], "processing_class": tokenizer,
              "peft_config": lora_config(cfg)}
    if "test" in data:
        common["eval_dataset"] = data["test"]
    try:
        trainer = SFTTrainer(**common) if kind == "sft" else DPOTrainer(**common)
        result = trainer.train()
        trainer.save_model(str(output_dir))
        tokenizer.save_pretrained(str(output_dir))
    except BaseException as e:
        record({**row, "status": "failed", "error": f"{type(e).__name__}: {e}"[:2000]})
        raise
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    done = {**row, "status": "finished", "steps": trainer.state.global_step,
            "final_loss": losses[-1] if losses else result.training_loss}
    record(done)
    return done



@dataclasses.dataclass(frozen=True)
class Adapter:
    name: str  # the model name requests ask for once it is served
    path: str


def train_adapter(dataset_dir: Path, *, name: str, base: str, cfg: TrainConfig, max_steps: int | None,
                  record) -> Adapter:
    """A LoRA adapter trained (TRL SFT) on `dataset_dir` beside it, named by a hash of what it was
    trained from (data, base, settings): a rerun finds it and trains nothing, and the request cache
    stays correct, because new data means a new served name."""
    cfg = cfg.model_copy(update={"lora": True})
    material = [hashlib.sha256((dataset_dir / "sft" / "train.parquet").read_bytes()).hexdigest(), base, max_steps,
                cfg.model_dump(mode="json")]
    digest = content_hash(material, 12)
    out = dataset_dir.parent / f"{dataset_dir.name}-lora-{digest}"
    if not (out / "adapter_config.json").exists():
        train("sft", dataset_dir=dataset_dir, model=base, cfg=cfg, output_dir=out, max_steps=max_steps, record=record)
    return Adapter(f"{name}-{digest}", str(out.resolve()))
