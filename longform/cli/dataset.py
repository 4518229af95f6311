"""What a corpus becomes: `longform export` (TRL datasets), `select` (GATEAU), `train` (TRL) and
`eval-length` (a model's length fidelity)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from longform.cli.app import DEFAULT_DB, app, console, user_errors
from longform.cli.reading import scored_run
from longform.errors import LongformError
from longform.store.corpus_reads import CorpusReads


@app.command()
def export(
    run: Optional[str] = typer.Option(None, "--run", help="Run id (default: the latest run with selections)."),
    name: Optional[str] = typer.Option(None, "--name", help="Folder under the out dir (default: the build's name)."),
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file."),
    out_dir: Optional[Path] = typer.Option(None, help="Parent folder (default: the run's [build] out_dir)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing export of that name."),
    mlt: bool = typer.Option(False, "--mlt", help="Prefix SFT answers with Ruler's Meta Length Token."),
    test_ratio: float = typer.Option(0.1, min=0, max=0.99, help="Share of prompts in the test split."),
) -> None:
    """Write a run's selected SFT samples and DPO pairs as TRL datasets with a dataset card."""
    with user_errors():
        from judges.ruler import meta_length_token
        from longform.export import export_run, export_target
        from longform.store import Store

        with CorpusReads.open(db) as reads:
            run_id, build_name, config = scored_run(reads, db, run)
        target = export_target(out_dir or Path(config["build"]["out_dir"]), name or build_name, force=force)
        store = Store.open_read_only(db)
        try:
            counts = export_run(store, run_id=run_id, target=target, config=config, test_ratio=test_ratio,
                                assistant_prefix=meta_length_token if mlt else None)
        finally:
            store.close()
        console.print(f"run {run_id} → {target}: SFT {counts['sft_train']} train / {counts['sft_test']} test,"
                      f" DPO {counts['dpo_train']} train / {counts['dpo_test']} test")


class SelectMethod(str, Enum):
    gateau = "gateau"


@app.command()
def select(
    method: SelectMethod = typer.Option(SelectMethod.gateau, "--method"),
    top_k: Optional[int] = typer.Option(None, "--top-k", min=1, help="Keep the N best-ranked samples."),
    ratio: Optional[float] = typer.Option(None, "--ratio", min=0.0, max=1.0, help="Keep this share of them."),
    run: Optional[str] = typer.Option(None, "--run", help="Run id (default: the latest run with selections)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML with [gateau] settings."),
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file."),
) -> None:
    """Rank a run's selected samples by GATEAU (HMG + CAM, on transformers) and keep the top of them."""
    with user_errors():
        from judges.gateau_selection import cached_measures, candidates, rank, save, scorer_for
        from longform.config import GateauConfig, load_settings
        from longform.store import Store

        if top_k is not None and ratio is not None:
            raise LongformError("give --top-k or --ratio, not both")
        with CorpusReads.open(db) as reads:
            run_id, _, run_config = scored_run(reads, db, run)
        # The run's own [gateau] settings unless a config is given.
        cfg = load_settings(config).gateau if config else GateauConfig.model_validate(run_config.get("gateau", {}))
        with Store.open_read_only(db) as store:
            picks = candidates(store, run_id)
            cached = cached_measures(store, picks, cfg)
        # Scoring holds no lock: builds and queries go on meanwhile.
        ranking = rank(picks, lambda: scorer_for(cfg), cfg, run_id=run_id, cached=cached, top_k=top_k, ratio=ratio)
        with Store.open(db) as store:
            save(store, run_id, ranking)
        result = ranking.summary
        console.print(f"run {run_id}: GATEAU ranked {result['ranked']} samples, kept {result['selected']},"
                      f" {result['not_scored']} not scored; measured {result['measured']}"
                      f" ({result['tokens']:,} tokens in {result['seconds']} s), {result['from_cache']} from the cache")


class TrainKind(str, Enum):
    sft = "sft"
    dpo = "dpo"


@app.command()
def train(
    kind: TrainKind = typer.Argument(..., help="sft or dpo"),
    dataset: Path = typer.Option(..., "--dataset", help="An export folder (datasets_out/<name>)."),
    model: str = typer.Option("embedded", "--model", help="HF model id (in the local cache), a local path,"
                                                           " or `embedded` (SmolLM2-135M-Instruct)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML with [train] (TRL's parameter names)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Stop after N optimizer steps."),
    lora: Optional[bool] = typer.Option(None, "--lora/--no-lora", help="Train a LoRA adapter (overrides [train] lora)."),
    output: Optional[Path] = typer.Option(None, "--output", help="Where to save (default: <out>/models/...)."),
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file to record the run in."),
) -> None:
    """Train with TRL's SFTTrainer or DPOTrainer on an export; the run is recorded in `train_runs`."""
    with user_errors():
        from longform.config import Settings, load_settings
        from longform.store import Store
        from longform.training import train as run_training

        settings = load_settings(config) if config else Settings()
        cfg = settings.train if lora is None else settings.train.model_copy(update={"lora": lora})
        if not dataset.is_dir():
            raise LongformError(f"{dataset}: no such export folder")

        def record(row: dict) -> None:
            # Opened only to write the row: a long training run must not hold the database.
            with Store.open(db) as store:
                store.put_train_run(row)

        done = run_training(kind.value, dataset_dir=dataset, model=model, cfg=cfg, output_dir=output,
                            max_steps=max_steps, record=record)
        console.print(f"{kind.value} {done['train_id']}: {done['steps']} steps on {done['rows']} rows,"
                      f" final loss {done['final_loss']:.4f} → {done['output_dir']}")


@app.command("eval-length")
def eval_length(
    model: str = typer.Option("embedded", "--model", help="HF model id (in the local cache), a local path"
                                                           " (e.g. a `longform train` output) or `embedded`."),
    prompts: Path = typer.Option(Path("configs/length_eval_prompts.jsonl"), "--prompts",
                                 help="JSONL prompts, each naming its length."),
    limit: Optional[int] = typer.Option(None, min=1, help="Use only the first N prompts."),
    max_new_tokens: Optional[int] = typer.Option(None, min=1, help="Cap per answer (smoke runs)."),
    seed: int = typer.Option(0),
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file to store the answers and scores in."),
) -> None:
    """Generate for prompts with required lengths; score S_l and Ruler PM/FM; store and print them."""
    with user_errors():
        from judges.length_eval import evaluate, targets
        from longform import hf_model
        from longform.prompts import load_prompts
        from longform.store import Store

        items = targets(load_prompts(prompts, limit), str(prompts))
        lm, tokenizer = hf_model.load_causal_lm(model)

        def generate(instruction: str, budget: int) -> tuple[str, int, str]:
            return hf_model.generate(lm, tokenizer, instruction, max_new_tokens=budget, seed=seed)

        with Store.open(db) as store:
            # A model saved by `longform train` is followed back to its training run (and its data).
            train_id = store.train_id_for(Path(model).resolve()) if Path(model).exists() else None
            result = evaluate(generate, items, model=model, tokens_per_word=1.5, max_new_tokens=max_new_tokens,
                              record=lambda row: store.add("length_evals", {**row, "train_id": train_id}))
        table = Table("prompt", "required", "words", "S_l", "finish", title=f"eval {result['eval_id']} · {model}")
        for r in result["rows"]:
            table.add_row(r["prompt_id"], str(r["required_words"]), str(r["words"]), f"{r['length_score']:.1f}",
                          r["finish_reason"])
        console.print(table)
        ruler = result["ruler"]
        console.print(f"mean S_l {result['mean_length_score']:.1f} · Ruler PM {_pct(ruler['overall']['PM'])}"
                      f" FM {_pct(ruler['overall']['FM'])} (n={ruler['overall']['n']}) · within ±10% of target"
                      f" {_pct(ruler['band']['PM'])}, ±25% {_pct(ruler['band']['FM'])}")


def _pct(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.0%}"
