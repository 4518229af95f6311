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
import warnings
from pathlib import Path
from typing import Literal

from longform.clock import timed_id
from longform.config import TrainConfig
from longform.errors import LongformError
from longform.dataset.export import MANIFEST
from longform.models.hf_model import resolve
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


def as_prompt_completion(data):
    """SFT rows as TRL's conversational prompt-completion: the user turn is the prompt and the
    answer the completion, so SFTTrainer computes the loss on the answer's tokens only
    (`completion_only_loss`, on by default for this format). The export keeps `messages`, the
    format every SFT tool reads."""
    if "messages" not in data.column_names:
        return data
    return data.map(lambda row: {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]},
                    remove_columns=["messages"])


def example_tokens(kind: Kind, row: dict, tokenizer) -> int:
    """Tokens of one example as the trainer sees it (chat template applied): prompt and answer, or
    for a preference pair the prompt and the longer of its two answers."""
    def count(messages: list[dict]) -> int:
        return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))
    if kind == "sft":
        return count(row["prompt"] + row["completion"])
    return max(count(row["prompt"] + row["chosen"]), count(row["prompt"] + row["rejected"]))


def fit_length(kind: Kind, data, tokenizer, configured: int | None, policy: str) -> tuple[object, int, int]:
    """(data, max_length, dropped): with no configured limit, the longest example's length, so
    nothing is cut; with one, the examples over it dropped (or refused), never truncated."""
    lengths = {split: [example_tokens(kind, row, tokenizer) for row in data[split]] for split in data}
    longest = max((n for split in lengths.values() for n in split), default=1)
    if configured is None:
        return data, longest, 0
    over = {split: [i for i, n in enumerate(lengths[split]) if n > configured] for split in data}
    dropped = sum(map(len, over.values()))
    if dropped and policy == "refuse":
        worst = max(n for split in lengths.values() for n in split)
        raise LongformError(f"[train.{kind}] max_length {configured}: {dropped} example(s) are longer (up to {worst}"
                            " tokens); raise it, remove the limit, or set [train] over_length = \"drop\"")
    for split, indices in over.items():
        if indices:
            skip = set(indices)
            data[split] = data[split].select([i for i in range(len(lengths[split])) if i not in skip])
    if not len(data["train"]):
        raise LongformError(f"[train.{kind}] max_length {configured}: every training example is longer")
    return data, configured, dropped


def trainer_args(kind: Kind, cfg: TrainConfig, output_dir: Path, max_steps: int | None, max_length: int | None = None):
    from trl import DPOConfig, SFTConfig

    cls = SFTConfig if kind == "sft" else DPOConfig
    params = {**_DEFAULTS, **_device_defaults(), **(cfg.sft if kind == "sft" else cfg.dpo)}
    if max_length is not None:
        params["max_length"] = max_length
    if max_steps is not None:
        params["max_steps"] = max_steps
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise LongformError(f"[train.{kind}] {unknown[0]}: not a {cls.__name__} parameter (TRL's names)")
    try:
        with warnings.catch_warnings():
            # TRL's own default (gradient_checkpointing=True) trips transformers 5's rename warning:
            # nothing a user can act on, and it would be the first line of every error.
            warnings.filterwarnings("ignore", message="`gradient_checkpointing` is deprecated", category=FutureWarning)
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


@dataclasses.dataclass
class Prepared:
    """What a trainer is made of: the splits (over-long examples left out), the tokenizer, TRL's
    arguments and the record of what was chosen."""
    kind: Kind
    data: object
    tokenizer: object
    model_path: str
    args: object
    params: dict
    max_length: int
    dropped: int


def prepare(kind: Kind, *, dataset_dir: Path, model: str, cfg: TrainConfig, output_dir: Path,
            max_steps: int | None, note=lambda line: None) -> Prepared:
    trainer_args(kind, cfg, output_dir, max_steps)   # a wrong parameter is refused before anything loads
    path = resolve(model)                             # so is a model that is not there
    data = load_split(dataset_dir, kind)
    if kind == "sft":
        for split in data:
            data[split] = as_prompt_completion(data[split])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    configured = (cfg.sft if kind == "sft" else cfg.dpo).get("max_length")
    data, max_length, dropped = fit_length(kind, data, tokenizer, configured, cfg.over_length)
    if dropped:
        note(f"[train.{kind}] max_length {max_length}: left out {dropped} example(s) longer than that"
             " (never cut: set [train] over_length = \"refuse\" to stop instead)")
    args, params = trainer_args(kind, cfg, output_dir, max_steps, max_length)
    return Prepared(kind, data, tokenizer, path, args, {**params, "dropped_over_length": dropped}, max_length, dropped)


def make_trainer(prepared: Prepared, cfg: TrainConfig):
    from transformers import AutoModelForCausalLM
    from trl import DPOTrainer, SFTTrainer

    network = AutoModelForCausalLM.from_pretrained(prepared.model_path)
    common = {"model": network, "args": prepared.args, "train_dataset": prepared.data["train"],
              "processing_class": prepared.tokenizer, "peft_config": lora_config(cfg)}
    if "test" in prepared.data:
        common["eval_dataset"] = prepared.data["test"]
    return SFTTrainer(**common) if prepared.kind == "sft" else DPOTrainer(**common)


def train(kind: Kind, *, dataset_dir: Path, model: str, cfg: TrainConfig, output_dir: Path | None,
          max_steps: int | None, record, note=lambda line: None) -> dict:
    """Train and save; `record(row)` is called when the run starts and again when it ends. The
    trainer's log (loss per step) is saved beside the model as `training_log.json`."""
    train_id = timed_id("t")
    output_dir = output_dir or dataset_dir.parent / "models" / f"{dataset_dir.name}-{kind}-{train_id}"
    prepared = prepare(kind, dataset_dir=dataset_dir, model=model, cfg=cfg, output_dir=output_dir,
                       max_steps=max_steps, note=note)
    row = {"train_id": train_id, "kind": kind, "dataset": str(dataset_dir), "model": model,
           "model_path": prepared.model_path, "params": json.dumps(prepared.params),
           "lora": json.dumps(lora_config(cfg).to_dict() if cfg.lora else None, default=list),
           "rows": len(prepared.data["train"]), "output_dir": str(Path(output_dir).resolve()), "status": "running",
           **dataset_provenance(dataset_dir, kind)}
    record(row)
    try:
        trainer = make_trainer(prepared, cfg)
        result = trainer.train()
        trainer.save_model(str(output_dir))
        prepared.tokenizer.save_pretrained(str(output_dir))
        (Path(output_dir) / "training_log.json").write_text(json.dumps(trainer.state.log_history, indent=1) + "\n",
                                                           encoding="utf-8")
    except BaseException as e:
        record({**row, "status": "failed", "error": f"{type(e).__name__}: {e}"[:2000]})
        raise
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    done = {**row, "status": "finished", "steps": trainer.state.global_step,
            "final_loss": losses[-1] if losses else result.training_loss, "max_length": prepared.max_length,
            "dropped": prepared.dropped}
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
