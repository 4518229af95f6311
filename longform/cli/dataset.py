"""What a corpus becomes: `longform export` (TRL datasets), `select` (GATEAU), `train` (TRL) and
`eval` (what a trained model learned: length fidelity, side by side with its base)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from longform.cli.app import DEFAULT_DB, app, console, user_errors
from longform.cli.inspection import scored_run
from longform.errors import LongformError
from longform.paths import ensure_writable_dir
from longform.store.browsing import CorpusReads


@app.command()
def export(
    run: Optional[str] = typer.Option(None, "--run", help="Run id (default: the latest run with selections)."),
    name: Optional[str] = typer.Option(None, "--name", help="Folder under the out dir (default: the build's name)."),
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file."),
    out_dir: Optional[Path] = typer.Option(None, help="Parent folder (default: the run's [build] out_dir)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing export of that name."),
    mlt: bool = typer.Option(False, "--mlt", help="Prefix SFT answers with Ruler's Meta Length Token."),
    test_ratio: Optional[float] = typer.Option(None, min=0, max=0.99, help="Share of prompts in the test split"
                                               " (default: the run's [export] test_ratio)."),
    relabel: Optional[bool] = typer.Option(None, "--relabel-length/--no-relabel-length",
                                           help="Rewrite each instruction's length to its answer's (default: the"
                                                " run's [export] relabel_length)."),
    decontaminate: list[Path] = typer.Option([], "--decontaminate", help="Evaluation prompts (JSONL): leave out"
                                             " samples whose instruction overlaps them. Repeatable; adds to the"
                                             " run's [export] decontaminate."),
    include_plan: Optional[bool] = typer.Option(None, "--include-plan/--no-include-plan",
                                                help="Put the AgentWrite plan before each SFT answer."),
) -> None:
    """Write a run's selected SFT samples and DPO pairs as TRL datasets with a dataset card."""
    with user_errors():
        from judges.ruler import meta_length_token
        from longform.config import Settings
        from longform.dataset.export import export_run, export_target
        from longform.store import Store

        with CorpusReads.open(db) as reads:
            run_id, build_name, config = scored_run(reads, db, run)
        stored = Settings.from_stored(config).export   # the run's own [export] settings
        files = [*stored.decontaminate, *decontaminate]
        for f in files:
            if not f.is_file():
                raise LongformError(f"{f}: evaluation prompts file not found (--decontaminate)")
        parent = out_dir or Path(config["build"]["out_dir"])
        ensure_writable_dir(parent, "export folder (--out-dir)")
        target = export_target(parent, name or build_name, force=force)
        # Decontamination writes its reasons beside the filters' checks; otherwise export only reads.
        store = Store.open(db) if files else Store.open_read_only(db)
        try:
            counts = export_run(store, run_id=run_id, target=target, config=config,
                                test_ratio=stored.test_ratio if test_ratio is None else test_ratio,
                                assistant_prefix=meta_length_token if mlt else None,
                                relabel_length=stored.relabel_length if relabel is None else relabel,
                                decontaminate=files,
                                include_plan=stored.include_plan if include_plan is None else include_plan)
        finally:
            store.close()
        manifest_note = counts.pop("shaping", {})
        console.print(f"run {run_id} → {target}: SFT {counts['sft_train']} train / {counts['sft_test']} test,"
                      f" DPO {counts['dpo_train']} train / {counts['dpo_test']} test")
        if manifest_note.get("relabel") or files or manifest_note.get("with_plan"):
            console.print(f"relabeled {manifest_note['relabeled_sft']} SFT / {manifest_note['relabeled_dpo']} DPO"
                          f" instructions; {manifest_note['decontaminated']} rows left out by decontamination;"
                          f" {manifest_note['with_plan']} answers with their plan")


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
        from longform.config import Settings, load_settings
        from longform.store import Store

        if top_k is not None and ratio is not None:
            raise LongformError("give --top-k or --ratio, not both")
        with CorpusReads.open(db) as reads:
            run_id, _, run_config = scored_run(reads, db, run)
        # The run's own [gateau] settings unless a config is given.
        cfg = load_settings(config).gateau if config else Settings.from_stored(run_config).gateau
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
        from longform.models.training import train as run_training

        settings = load_settings(config) if config else Settings()
        cfg = settings.train if lora is None else settings.train.model_copy(update={"lora": lora})
        if not dataset.is_dir():
            raise LongformError(f"{dataset}: no such export folder")
        if output is not None:
            ensure_writable_dir(output, "model folder (--output)")

        def record(row: dict) -> None:
            # Opened only to write the row: a long training run must not hold the database.
            with Store.open(db) as store:
                store.put_train_run(row)

        done = run_training(kind.value, dataset_dir=dataset, model=model, cfg=cfg, output_dir=output,
                            max_steps=max_steps, record=record, note=console.print)
        console.print(f"{kind.value} {done['train_id']}: {done['steps']} steps on {done['rows']} rows"
                      f" (max_length {done['max_length']} tokens), final loss {done['final_loss']:.4f}"
                      f" → {done['output_dir']}")


@app.command("eval")
def eval_models(
    model: list[str] = typer.Option([], "--model", help="A model run in transformers: a local path (e.g. a"
                                    " `longform train` output), an HF id in the local cache, or `embedded`. Repeatable."),
    endpoint: list[str] = typer.Option([], "--endpoint", help="A served model: URL or MODEL@URL of an"
                                       " OpenAI-compatible server (vLLM…), or `embedded` (the llama.cpp server)."
                                       " Repeatable; asked through the engine, so cached."),
    prompts: Path = typer.Option(Path("configs/eval_prompts.jsonl"), "--prompts",
                                 help="JSONL prompts naming their lengths: longform's, or LongBench-Write's"
                                      " (prompt, length, type)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c",
                                          help="TOML whose [endpoint] retry settings and [judges] (S_q) apply."),
    quality: bool = typer.Option(False, "--quality/--no-quality", help="Also score S_q with the rubric judge."),
    limit: Optional[int] = typer.Option(None, min=1, help="Use only the first N prompts."),
    max_new_tokens: Optional[int] = typer.Option(None, min=1, help="Cap every answer (smoke runs)."),
    seed: int = typer.Option(0),
    temperature: float = typer.Option(0.7, min=0.0),
    top_p: float = typer.Option(0.95, min=0.01, max=1.0),
    batch_size: int = typer.Option(8, min=1, help="Answers generated together by a transformers model."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder (default: datasets_out/evals/<eval id>)."),
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file to store the answers and scores in."),
) -> None:
    """Several models answer the same prompts; length (and S_q) per model, paired differences, a report."""
    with user_errors():
        run_eval(model or ([] if endpoint else ["embedded"]), endpoint, prompts=prompts, config=config,
                 quality=quality, limit=limit, max_new_tokens=max_new_tokens, seed=seed, temperature=temperature,
                 top_p=top_p, batch_size=batch_size, out=out, db=db)


def run_eval(models: list[str], endpoints: list[str], *, prompts: Path, config: Optional[Path], quality: bool,
             limit: Optional[int], max_new_tokens: Optional[int], seed: int, temperature: float, top_p: float,
             batch_size: int, out: Optional[Path], db: Path) -> None:
    from judges.eval_report import write_eval_report
    from judges.length_eval import eval_prompts, verdict
    from judges.model_eval import Sampling, endpoint_contestant, evaluate, local_contestant, new_eval_id
    from longform.config import Settings, load_settings
    from longform.store import Store

    settings = load_settings(config) if config else Settings()
    items = eval_prompts(prompts, limit)
    if out is not None:
        ensure_writable_dir(out, "report folder (--out)")  # before any model time is spent
    sampling = Sampling(seed=seed, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                        batch_size=batch_size)
    eval_id = new_eval_id()
    console.print(f"eval {eval_id}: {len(items)} prompts from {prompts}")
    with Store.open(db, live=True) as store:
        contestants = [local_contestant(m, store) for m in models] + [endpoint_contestant(e) for e in endpoints]
        result = evaluate(store, contestants, items, prompts_path=str(prompts), sampling=sampling, settings=settings,
                          quality=quality, eval_id=eval_id, note=lambda line: console.print(line))
    models_rows = [{"model": c.label, "backend": c.backend, "train_id": c.train_id, "summary": result.summaries[c.label]}
                   for c in result.contestants]
    report = write_eval_report(eval_id, models_rows, result.answers, result.pairs,
                               out or Path("datasets_out") / "evals" / eval_id)
    table = Table("model", "n", "mean S_l [95% CI]", "median S_l", "PM / FM", "EOS", "repetitive", "S_q",
                  title=f"eval {eval_id} · {len(items)} prompts · {result.generated} generated, {result.reused} reused")
    for c in result.contestants:
        s = result.summaries[c.label]
        ci = s["mean_length_score_ci"]
        table.add_row(c.label, str(s["answered"]) + (f" (+{s['failed']} failed)" if s["failed"] else ""),
                      f"{_num(s['mean_length_score'])}" + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci[0] is not None else ""),
                      _num(s["median_length_score"]), f"{_pct(s['ruler_pm'])} / {_pct(s['ruler_fm'])}",
                      _pct(s["eos_rate"]), _pct(s["repetition_rate"]), _num(s["mean_quality"]))
    console.print(table)
    for p in result.pairs:
        if p["metric"] in ("length_score", "quality") and p["mean_diff"] is not None:
            ci = f" [{p['ci_low']:.1f}, {p['ci_high']:.1f}]" if p["ci_low"] is not None else ""
            console.print(f"{p['model_a']} − {p['model_b']}: {p['metric']} {p['mean_diff']:+.1f}{ci}"
                          f" over {p['n']} prompts ({verdict(p)})")
    console.print(f"report → {report}")


@app.command("eval-length", hidden=True)
def eval_length(
    model: str = typer.Option("embedded", "--model", help="See `longform eval`."),
    prompts: Path = typer.Option(Path("configs/length_eval_prompts.jsonl"), "--prompts"),
    limit: Optional[int] = typer.Option(None, min=1),
    max_new_tokens: Optional[int] = typer.Option(None, min=1),
    seed: int = typer.Option(0),
    db: Path = typer.Option(DEFAULT_DB),
) -> None:
    """Retired: `longform eval --model M` does this, for several models at once."""
    with user_errors():
        console.print("eval-length is now `longform eval` (one or more --model / --endpoint); running that")
        run_eval([model], [], prompts=prompts, config=None, quality=False, limit=limit, max_new_tokens=max_new_tokens,
                 seed=seed, temperature=0.7, top_p=0.95, batch_size=8, out=None, db=db)


def _num(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.1f}"


def _pct(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.0%}"
