"""`longform`: the command line.

Input is validated here, before Prefect or a model starts, so a bad config or prompts file costs
one line of output and exit code 2. Errors that are bugs keep their traceback.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, \
    TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from longform import stopping
from longform.errors import LongformError
from longform.prefect_backend import configured_api_url, prefect_api
from longform.stopping import Interrupted

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Build long-output SFT/DPO data with AgentWrite on local models.")
console = Console()
err_console = Console(stderr=True)
DEFAULT_DB = Path("datasets_out/corpus.duckdb")


_debug = False


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for input errors too.")) -> None:
    global _debug
    _debug = debug


@contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except Interrupted as e:
        if _debug:
            raise
        err_console.print(f"[bold red]interrupted:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    except LongformError as e:
        if _debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted:[/] stopped at once; the run is recorded as interrupted and"
                          " the same command resumes it")
        raise typer.Exit(130) from None


@contextmanager
def _graceful_ctrl_c() -> Iterator[None]:
    """First Ctrl-C: send nothing new, let answers in flight arrive and be stored. Second: stop now."""

    def on_sigint(signum: int, frame: object) -> None:
        if stopping.stop_reason() is not None:
            raise KeyboardInterrupt
        stopping.request_stop(Interrupted(
            "stopped sending and kept every answer that arrived; the same command resumes the build"))
        err_console.print("stopping: waiting for requests in flight to finish (Ctrl-C again to stop now)")

    stopping.reset()
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        stopping.reset()


def _quiet_prefect() -> None:
    # The CLI draws its own progress; Prefect's INFO lines would tear it. Errors that reach the
    # user are printed once, by _user_errors, so Prefect's copy with a traceback is dropped too.
    # Set before Prefect is imported: it reads these when it configures logging.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    for logger in ("PREFECT_FLOW_RUNS", "PREFECT_TASK_RUNS"):
        os.environ.setdefault(f"PREFECT_LOGGING_LOGGERS_{logger}_LEVEL", "CRITICAL")
    # The ephemeral server would try to reach the internet for telemetry.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's 20 s default is too short for its local server on a loaded 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


@app.command()
def build(
    config: Path = typer.Option(..., "--config", "-c", help="TOML config file."),
    prompts: Optional[Path] = typer.Option(None, help="JSONL prompts file (overrides [build] prompts)."),
    limit: Optional[int] = typer.Option(None, min=1, help="Use only the first N prompts."),
    db: Optional[Path] = typer.Option(None, help="DuckDB file (overrides [build] db)."),
    until_accepted: Optional[int] = typer.Option(
        None, min=1, help="Keep writing candidates (within [build] candidate_budget) until N samples pass"
                          " the selection policy ([selection] min_length_score)."),
    shards: Optional[int] = typer.Option(None, help="Split the build into N shards, each its own database, run"
                                                    " by Prefect workers (or --local processes), then merged."),
    local: bool = typer.Option(False, "--local", help="Run the shards as processes here, without Prefect."),
    allow_partial: bool = typer.Option(False, "--allow-partial", help="Merge the shards that finished even if"
                                                                      " others failed."),
) -> None:
    """Write, score, store and export a corpus as the config says."""
    with _user_errors():
        from longform.build_inputs import load_build_inputs
        from longform.paths import ensure_writable_dir
        from longform.shards import check_shards, shard_db
        from longform.store import Store

        settings, _, _ = load_build_inputs(config, prompts=prompts, db=db, limit=limit)
        if until_accepted and len(settings.writers.enabled) > 1:
            # Its candidate order and budget are one writer's; two would need a policy for splitting them.
            raise LongformError(f"{config}: --until-accepted runs one writer; [writers] enabled lists"
                                f" {', '.join(settings.writers.enabled)} (enable one, or drop --until-accepted)")
        n = settings.build.shards if shards is None else shards
        check_shards(0, n)
        if n > 1:
            if until_accepted:
                raise LongformError("--until-accepted counts accepted samples across the whole build; it cannot be"
                                    " sharded (drop --shards or [build] shards)")
            ensure_writable_dir(shard_db(settings, 0, n).parent, "shard directory")
        if settings.build.db.exists():
            # A newer schema or another build holding the database fails here, before Prefect starts.
            Store.open_read_only(settings.build.db).close()
        _quiet_prefect()
        from longform.progress import set_reporter

        arguments = dict(config=str(config), prompts=_opt(prompts), limit=limit, db=_opt(db))
        with _RichReporter() as reporter, _graceful_ctrl_c():
            set_reporter(reporter)
            try:
                if n > 1 and local:
                    from flows.shards import build_sharded

                    # No Prefect at all: the parent as the plain function its flow wraps.
                    summary = asyncio.run(build_sharded.fn(**arguments, shards=n, local=True,
                                                           allow_partial=allow_partial))
                else:
                    with prefect_api():
                        summary = asyncio.run(_run_build_flow(arguments, n, until_accepted, allow_partial))
            finally:
                set_reporter(None)
        _print_summary(summary)
        if summary["samples"] == 0:
            raise LongformError(f"no sample was written ({summary['failures']}); see the failures table")


@app.command()
def serve(
    config: Path = typer.Option(..., "--config", "-c", help="TOML config file each scheduled run builds."),
    cron: str = typer.Option("0 2 * * *", help="Schedule, as a cron expression (Prefect's timezone: UTC)."),
    name: Optional[str] = typer.Option(None, help="Deployment name (default: [build] name)."),
) -> None:
    """Serve the build as a scheduled Prefect deployment; runs until stopped (Ctrl-C)."""
    with _user_errors():
        from longform.build_inputs import load_build_inputs

        settings, _, _ = load_build_inputs(config)
        if not configured_api_url():
            err_console.print("note: PREFECT_API_URL is not set, so the schedule lives in a temporary Prefect"
                              " server that ends with this process; see README, 'Run it on a schedule'")
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        with prefect_api():
            from prefect.deployments.runner import EntrypointType

            from flows.build import build as build_flow

            # A module entrypoint, so runs start from any working directory where longform is installed.
            build_flow.serve(name=name or settings.build.name, cron=cron,
                             parameters={"config": str(config.resolve())},
                             entrypoint_type=EntrypointType.MODULE_PATH,
                             description=f"longform build of {config}")


async def _run_build_flow(arguments: dict, shards: int, until_accepted: Optional[int], allow_partial: bool) -> dict:
    if shards > 1:
        from flows.shards import build_sharded

        return await build_sharded(**arguments, shards=shards, allow_partial=allow_partial)
    from flows.build import build as build_flow

    return await build_flow(**arguments, until_accepted=until_accepted)


@app.command("build-shard", hidden=True)
def build_shard_command(
    config: Path = typer.Option(..., "--config", "-c"),
    shard: int = typer.Option(..., "--shard"),
    shards: int = typer.Option(..., "--shards"),
    prompts: Optional[Path] = typer.Option(None),
    limit: Optional[int] = typer.Option(None),
) -> None:
    """One shard of a sharded build, in this process and without Prefect (what --local runs)."""
    with _user_errors(), _graceful_ctrl_c():
        from flows.shards import write_one_shard

        summary = asyncio.run(write_one_shard(str(config), shard, shards, _opt(prompts), limit))
        console.print(f"shard {shard} of {shards}: {summary['samples']} samples, {summary['requests_sent']} requests"
                      f" sent, {summary['cache_hits']} from the cache")


@app.command()
def deploy(
    pool: str = typer.Option("longform", "--pool", help="Prefect work pool (type process) whose workers run shards."),
    name: str = typer.Option("longform", "--name", help="Deployment name: shards run as build-shard/NAME."),
) -> None:
    """Register the `build-shard` deployment that `longform build --shards N` runs, on a Prefect server."""
    with _user_errors():
        if not configured_api_url():
            raise LongformError("PREFECT_API_URL is not set: a deployment lives on a Prefect server that every"
                                " worker reaches (README, 'Many machines')")
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        from flows.shards import build_shard

        root = Path(__file__).resolve().parents[1]
        deployment = build_shard.from_source(source=str(root), entrypoint="flows/shards.py:build_shard")
        deployment.deploy(name=name, work_pool_name=pool, print_next_steps=False)
        console.print(f"registered build-shard/{name} on pool {pool!r}; start workers with"
                      f" `prefect worker start --pool {pool}`, then `longform build --shards N`"
                      + ("" if name == "longform" else f" with [build] shard_deployment = \"build-shard/{name}\""))


def _opt(path: Optional[Path]) -> Optional[str]:
    return str(path) if path is not None else None


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


@app.command()
def query(
    sql: str = typer.Argument(..., help="SQL to run, read-only."),
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file."),
    format: Format = typer.Option(Format.table, "--format", "-f"),
) -> None:
    """Run SQL over the corpus (the database is opened read-only)."""
    with _user_errors():
        from longform.store import read_query

        columns, rows = read_query(db, sql)
        if format is Format.csv:
            # "\n", not the csv module's default "\r\n": on Linux, scripts would read "42\r" (the DuckDB CLI agrees).
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(columns)
            writer.writerows(rows)
        elif format is Format.json:
            print(json.dumps([dict(zip(columns, r)) for r in rows], ensure_ascii=False, default=str, indent=1))
        else:
            table = Table(*columns, show_lines=False)
            for row in rows:
                table.add_row(*("NULL" if v is None else str(v) for v in row))
            console.print(table)


@app.command()
def status(
    run: Optional[str] = typer.Option(None, "--run", help="Run id (default: the latest run)."),
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file."),
) -> None:
    """Per-stage requests, cache hits, tokens, errors and speed of a run, also while it runs."""
    with _user_errors():
        from longform.store import read_query

        # By default the latest build run, not one of the shard runs a sharded build merged in.
        where = f"where run_id = '{run.replace(chr(39), '')}'" if run else \
            "where json_extract_string(config, '$.build.shard') is null"
        _, runs = read_query(db, f"select run_id, name, status, started_at, finished_at from runs {where}"
                                 " order by started_at desc limit 1")
        if not runs:
            raise LongformError(f"{db}: no run {run!r}" if run else f"{db}: no runs yet")
        run_id, name, state, started, finished = runs[0]
        _, [(config_json,)] = read_query(db, f"select config from runs where run_id = '{run_id}'")
        run_config = json.loads(config_json)
        endpoint = (run_config.get("endpoints") or [run_config.get("endpoint", {})])[0]
        prices = (endpoint.get("price_in_per_mtok"), endpoint.get("price_out_per_mtok"))
        _, [(version,)] = read_query(db, "select max(version) from schema_version")
        if version < 2:
            console.print(f"run {run_id} · {name} · {state}: no per-stage stats in a v{version} database;"
                          " the next build upgrades it")
            return
        _, stages = read_query(db, "select stage, requests, cache_hits, attempts, tokens_in, tokens_out, truncated,"
                                   f" errors, wall_s, updated_at from run_stats where run_id = '{run_id}' order by stage")
        table = Table("stage", "requests", "cache hits", "retries", "tokens in", "tokens out", "tokens/s",
                      "truncated", "errors", "wall s",
                      title=f"run {run_id} · {name} · {state} · started {started}"
                            + (f" · finished {finished}" if finished else ""))
        for stage, requests, hits, attempts, t_in, t_out, truncated, errors, wall, _ in stages:
            errors = json.loads(errors) if isinstance(errors, str) else errors
            table.add_row(stage, str(requests), str(hits), str(attempts - requests), f"{t_in:,}", f"{t_out:,}",
                          f"{t_out / wall:,.1f}" if wall else "–",
                          f"{truncated / requests:.0%}" if requests else "–",
                          ", ".join(f"{k} × {v}" for k, v in errors.items()) or "none", f"{wall:.1f}")
        console.print(table)
        if version >= 8:
            _print_endpoints(db, run_id)
        _print_shards(run_config)
        if all(p is not None for p in prices):
            cost = sum(row[4] * prices[0] + row[5] * prices[1] for row in stages) / 1e6
            console.print(f"estimated cost: {cost:,.4f} at {prices[0]:g} in / {prices[1]:g} out per million tokens")


def _print_shards(run_config: dict) -> None:
    """Each shard's own database, read live while its shard writes it."""
    from longform.config import Settings
    from longform.shards import shard_db
    from longform.store import read_query

    settings = Settings.model_validate(run_config)
    n = settings.build.shards
    if n <= 1:
        return
    table = Table("shard", "database", "state", "samples", "failures", "requests", title=f"shards ({n})")
    for i in range(n):
        path = shard_db(settings, i, n)
        try:
            _, [(state, samples, failures, requests)] = read_query(
                path, "select (select status from runs order by started_at desc limit 1), (select count(*) from"
                      " samples), (select count(*) from failures), (select count(*) from requests)")
        except LongformError as e:
            state, samples, failures, requests = ("not started" if not path.exists() else str(e)), "–", "–", "–"
        table.add_row(str(i), str(path), str(state), str(samples), str(failures), str(requests))
    console.print(table)


def _print_endpoints(db: Path, run_id: str) -> None:
    from longform.store import read_query

    _, lanes = read_query(db, "select pool, endpoint, state, reason, concurrency, requests, attempts, failed_attempts,"
                              f" tokens_out, errors, wall_s from endpoint_stats where run_id = '{run_id}'"
                              " order by pool, endpoint")
    table = Table("pool", "endpoint", "state", "limit", "requests", "retried attempts", "failed attempts",
                  "tokens/s", "errors", title="endpoints")
    for pool, url, state, reason, limit, requests, attempts, failed, t_out, errors, wall in lanes:
        errors = json.loads(errors) if isinstance(errors, str) else errors
        table.add_row(pool, url, state + (f" ({reason})" if reason else ""), str(limit), str(requests),
                      str(attempts - requests), str(failed), f"{t_out / wall:,.1f}" if wall else "–",
                      ", ".join(f"{k} × {v}" for k, v in errors.items()) or "none")
    console.print(table)


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
    with _user_errors():
        from judges.ruler import meta_length_token
        from longform.export import export_run, export_target
        from longform.store import Store

        run_id, build_name, config = _scored_run(db, run)
        target = export_target(out_dir or Path(config["build"]["out_dir"]), name or build_name, force=force)
        store = Store.open_read_only(db)
        try:
            counts = export_run(store, run_id=run_id, target=target, config=config, test_ratio=test_ratio,
                                assistant_prefix=meta_length_token if mlt else None)
        finally:
            store.close()
        console.print(f"run {run_id} → {target}: SFT {counts['sft_train']} train / {counts['sft_test']} test,"
                      f" DPO {counts['dpo_train']} train / {counts['dpo_test']} test")


def _scored_run(db: Path, run: Optional[str]) -> tuple[str, str, dict]:
    from longform.store import read_query

    where = f"and run_id = '{run.replace(chr(39), '')}'" if run else ""
    _, runs = read_query(db, "select run_id, name, config from runs where run_id in"
                             f" (select run_id from selections) {where} order by started_at desc limit 1")
    if not runs:
        raise LongformError(f"{db}: no run {run!r} with selections" if run
                            else f"{db}: no run has scored its samples yet; run `longform build`")
    run_id, name, config_json = runs[0]
    return run_id, name, json.loads(config_json)


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
    with _user_errors():
        from judges.gateau_selection import cached_measures, candidates, rank, save, scorer_for
        from longform.config import GateauConfig, load_settings
        from longform.store import Store

        if top_k is not None and ratio is not None:
            raise LongformError("give --top-k or --ratio, not both")
        run_id, _, run_config = _scored_run(db, run)
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
    with _user_errors():
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
    with _user_errors():
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


@app.command()
def report(
    run: Optional[str] = typer.Option(None, "--run", help="Run id (default: the latest run that scored its samples)."),
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file."),
    out: Optional[Path] = typer.Option(None, help="Directory (default: <out_dir>/<build name>/report)."),
) -> None:
    """Markdown report with plots: lengths, S_l, judges and their length bias, filters, selection."""
    with _user_errors():
        from judges.report import write_report
        from longform.corpus_reads import CorpusReads

        run_id, name, config = _scored_run(db, run)
        out_dir = out or Path(config["build"]["out_dir"]) / name / "report"
        with CorpusReads.open(db) as reads:
            data = reads.report(run_id)
        path = write_report(data, out_dir)
        console.print(f"report for run {run_id}: {path}")


@app.command()
def view(
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback: only this machine)."),
    port: int = typer.Option(8765, min=0, max=65535),
) -> None:
    """A local, read-only web page to read and audit the corpus: runs, samples, lineage, judges, selections."""
    with _user_errors():
        from longform.store import read_query

        read_query(db, "SELECT count(*) FROM runs")  # a missing or unreadable database: one line, exit 2
        import uvicorn

        from longform.viewer.app import create_app

        err_console.print(f"longform view: http://{host}:{port}/ (Ctrl-C stops)")
        uvicorn.run(create_app(db), host=host, port=port, log_level="warning")


class _EngineColumn(ProgressColumn):
    def __init__(self, reporter: "_RichReporter"):
        super().__init__()
        self._reporter = reporter

    def render(self, task) -> Text:
        engine = self._reporter.engine
        if engine is None:
            return Text("connecting to the model endpoint…", style="dim")
        try:
            totals = engine.totals()
        except RuntimeError:  # a stage was added while we read; next refresh will show it
            return Text("")
        elapsed = task.elapsed or 0.0
        rate = totals.tokens_out / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:,.0f} tok/s · {totals.requests} sent · {totals.cache_hits} cached"
                    f" · {sum(totals.errors.values())} errors", style="cyan")


class _RichReporter:
    def __init__(self) -> None:
        self.engine = None
        self._progress = Progress(SpinnerColumn(), TextColumn("samples"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), _EngineColumn(self), console=err_console, transient=False)
        self._task = self._progress.add_task("samples", total=None)
        self.failed = 0

    def __enter__(self) -> "_RichReporter":
        self._progress.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            # A failed build ends with its one-line error, not a half-drawn bar above it.
            self._progress.live.transient = True
        self._progress.stop()

    def start(self, total_samples: int, engine: object) -> None:
        self.engine = engine
        self._progress.update(self._task, total=total_samples)
        self._progress.reset(self._task, total=total_samples)

    def sample_done(self, ok: bool) -> None:
        self.failed += int(not ok)
        self._progress.advance(self._task)
        if not err_console.is_terminal:
            # No live bar in a log file or CI: one line per finished sample instead.
            task = self._progress.tasks[0]
            err_console.print(f"samples {task.completed:.0f}/{task.total:.0f} · {self.failed} failed · ",
                              _EngineColumn(self).render(task), sep="", highlight=False)

    def note(self, message: str) -> None:
        self._progress.console.print(message, highlight=False)

    def stop(self) -> None:
        self._progress.refresh()


def _print_summary(s: dict) -> None:
    table = Table(title=f"build {s['name']} · run {s['run_id']}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    failures = ", ".join(f"{k} × {v}" for k, v in s["failures"].items()) or "none"
    rows = [
        ("samples", f"{s['samples']} ({s['new_samples']} new)"),
        ("resumed runs", ", ".join(s["resumed_runs"]) or "none"),
        *([("accepted", f"{s['accepted']} of {s['candidates']} candidates")] if s["accepted"] is not None else []),
        ("failures", failures),
        ("median length score S_l", "n/a" if s["median_length_score"] is None else f"{s['median_length_score']:.1f}"),
        *_scoring_rows(s.get("scoring")),
        ("model requests sent", str(s["requests_sent"])),
        ("answered from cache", str(s["cache_hits"])),
        ("tokens in / out", f"{s['tokens_in']:,} / {s['tokens_out']:,}"),
        ("truncated answers", str(s["truncated"])),
        ("request errors", ", ".join(f"{k} × {v}" for k, v in s["request_errors"].items()) or "none"),
        ("wall time", f"{s['wall_s']:.1f} s"),
        ("exported to", s["export_dir"] or "(export disabled)"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def _scoring_rows(scoring: dict | None) -> list[tuple[str, str]]:
    if not scoring:
        return []
    rows = [("selected", f"{scoring['sft_selected']} SFT samples · {scoring['dpo_pairs']} DPO pairs"),
            ("filter rejections", ", ".join(f"{k} × {v}" for k, v in scoring["failed_checks"].items()) or "none")]
    if scoring.get("gateau"):
        g = scoring["gateau"]
        rows.append(("GATEAU", f"ranked {g['ranked']}, kept {g['selected']}, {g.get('not_scored', 0)} not scored;"
                               f" measured {g.get('measured', g['ranked'])}, {g.get('from_cache', 0)} from the cache"))
    for kind, fit in scoring["length_fits"].items():
        if fit["status"] == "fitted":
            value = f"φ = {fit['phi']:.2f} [{fit['ci'][0]:.2f}, {fit['ci'][1]:.2f}] from {fit['n']}"
        else:
            value = f"not identified: {fit['reason']}"
        rows.append((f"{kind} judge length bias", value))
    return rows


def main() -> None:
    app()


if __name__ == "__main__":
    main()
