"""`longform build`, `serve`, `deploy` and the hidden `build-shard`: the commands that write a corpus."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Optional

import typer

from longform.cli.app import app, console, err_console, graceful_ctrl_c, opt, quiet_prefect, user_errors
from longform.cli.live_display import RichReporter, print_summary
from longform.errors import LongformError
from longform.build.prefect_api import configured_api_url, prefect_api


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
    with user_errors():
        from longform.build.inputs import load_build_inputs
        from longform.paths import ensure_writable_dir
        from longform.build.shards import shard_db
        from longform.store import Store

        settings, _, _ = load_build_inputs(config, prompts=prompts, db=db, limit=limit, shards=shards,
                                           until_accepted=until_accepted)
        n = settings.build.shards
        if n > 1:
            ensure_writable_dir(shard_db(settings, 0, n).parent, "shard directory")
        if settings.build.db.exists():
            # A newer schema or another build holding the database fails here, before Prefect starts.
            Store.open_read_only(settings.build.db).close()
        quiet_prefect()
        from longform.build.reporting import set_reporter

        arguments = dict(config=str(config), prompts=opt(prompts), limit=limit, db=opt(db))
        with RichReporter() as reporter, graceful_ctrl_c():
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
        print_summary(summary)
        if summary["samples"] == 0:
            raise LongformError(f"no sample was written ({summary['failures']}); see the failures table")


@app.command()
def serve(
    config: Path = typer.Option(..., "--config", "-c", help="TOML config file each scheduled run builds."),
    cron: str = typer.Option("0 2 * * *", help="Schedule, as a cron expression (Prefect's timezone: UTC)."),
    name: Optional[str] = typer.Option(None, help="Deployment name (default: [build] name)."),
) -> None:
    """Serve the build as a scheduled Prefect deployment; runs until stopped (Ctrl-C)."""
    with user_errors():
        from longform.build.inputs import load_build_inputs

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
    with user_errors(), graceful_ctrl_c():
        from flows.shards import write_one_shard

        summary = asyncio.run(write_one_shard(str(config), shard, shards, opt(prompts), limit))
        console.print(f"shard {shard} of {shards}: {summary['samples']} samples, {summary['requests_sent']} requests"
                      f" sent, {summary['cache_hits']} from the cache")


@app.command()
def deploy(
    pool: str = typer.Option("longform", "--pool", help="Prefect work pool (type process) whose workers run shards."),
    name: str = typer.Option("longform", "--name", help="Deployment name: shards run as build-shard/NAME."),
    heartbeat_s: int = typer.Option(60, "--heartbeat-s", min=30, help="Seconds between a shard run's heartbeats."),
    silent_s: Optional[int] = typer.Option(None, "--silent-s", min=31, help="Seconds without a heartbeat after which"
                                           " a shard run is marked Crashed and run again (default: 3 heartbeats)."),
) -> None:
    """Register the `build-shard` deployment that `longform build --shards N` runs, on a Prefect server,
    and the automation that marks a shard run whose machine was lost as Crashed."""
    with user_errors():
        if not configured_api_url():
            raise LongformError("PREFECT_API_URL is not set: a deployment lives on a Prefect server that every"
                                " worker reaches (docs/many-machines.md)")
        silent_s = silent_s or 3 * heartbeat_s
        if silent_s <= heartbeat_s:
            raise LongformError(f"--silent-s {silent_s} must be longer than --heartbeat-s {heartbeat_s}, or every"
                                " run would be marked Crashed between two heartbeats")
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        from flows.recovery import ensure_crash_automation, heartbeat_env
        from flows.shards import build_shard

        root = Path(__file__).resolve().parents[2]
        deployment = build_shard.from_source(source=str(root), entrypoint="flows/shards.py:build_shard")
        deployment.deploy(name=name, work_pool_name=pool, print_next_steps=False,
                          job_variables={"env": heartbeat_env(heartbeat_s)})
        done = ensure_crash_automation(build_shard.name, silent_s)
        console.print(f"crash detection: shard runs send a heartbeat every {heartbeat_s} s; one silent for {silent_s} s"
                      f" is marked Crashed and its shard run again (automation {done})")
        console.print(f"registered build-shard/{name} on pool {pool!r}; start workers with"
                      f" `prefect worker start --pool {pool}`, then `longform build --shards N`"
                      + ("" if name == "longform" else f" with [build] shard_deployment = \"build-shard/{name}\""))
