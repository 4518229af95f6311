"""Builds that span machines: N shards, each written into its own DuckDB file, merged, then the
corpus-wide stages once.

`build_shard` is a Prefect flow: registered as the `build-shard` deployment on a process work pool,
its runs are taken by `prefect worker start --pool …` on any number of machines (Prefect is the
distributed engine; longform adds none of its own). With `local`, the parent runs the same shard
code as N processes on this machine instead, without a Prefect server. Either way each shard
resumes from its own file's request cache when it is run again, and the parent merges only the
shards that finished (the rest too with `allow_partial`), idempotently.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from flows.pipeline import corpus_stages, write_stages
from flows.stages import register_prompts
from longform.build.inputs import load_build_inputs
from longform.errors import LongformError
from longform.build.reporting import reporter
from longform.build.session import build_session, corpus_session
from longform.build.shards import check_shards, shard_db, shard_prompts, shard_settings


async def write_one_shard(config: str, shard: int, shards: int, prompts: str | None = None,
                          limit: int | None = None, flow_run_id: str | None = None) -> dict:
    """Write shard `shard` of `shards` into its own database; its summary names what it wrote."""
    check_shards(shard, shards)
    settings, prompts_path, prompt_list = load_build_inputs(Path(config), prompts=prompts, limit=limit)
    settings = shard_settings(settings, shard, shards)
    mine = shard_prompts(prompt_list, shard, shards)
    async with build_session(settings, prompts_path=prompts_path, prefect_flow_run_id=flow_run_id,
                             shard=(shard, shards)) as session:
        await write_stages(session, mine, str(prompts_path), until_accepted=None)
        return session.summary()


@flow(name="build-shard", retries=2, retry_delay_seconds=10)
async def build_shard(config: str, shard: int, shards: int, prompts: str | None = None,
                      limit: int | None = None) -> dict:
    """One shard, as a Prefect flow run: a failed run is retried and resumes from its file's cache."""
    summary = await write_one_shard(config, shard, shards, prompts, limit, flow_run_id=flow_run.id)
    return {k: summary[k] for k in ("run_id", "samples", "failures", "requests_sent", "cache_hits")}


@flow(name="build-sharded")
async def build_sharded(config: str, shards: int, prompts: str | None = None, limit: int | None = None,
                        db: str | None = None, local: bool = False, allow_partial: bool = False) -> dict:
    """Run the shards (Prefect deployment runs, or local processes), merge them, then score, select,
    run GATEAU and export once on the merged database."""
    check_shards(0, shards)
    settings, prompts_path, prompt_list = load_build_inputs(Path(config), prompts=prompts, db=db, limit=limit)
    settings = settings.model_copy(update={"build": settings.build.model_copy(update={"shards": shards})})
    # The parent's run is `running` while its shards are, so `longform status` finds them.
    async with corpus_session(settings, prompts_path=prompts_path, prefect_flow_run_id=flow_run.id) as session:
        # Registered here first, in file order, as an unsharded build would: "earlier" prompts win
        # near-duplicate checks, whatever order the shards finish in.
        register_prompts.fn(session, prompt_list, str(prompts_path))
        runner = _run_local if local else _run_deployments
        outcomes = await runner(settings.build.shard_deployment, config, shards, prompts, limit)
        failed = {i: why for i, why in outcomes.items() if why}
        if failed and (not allow_partial or len(failed) == shards):
            named = "; ".join(f"shard {i}: {why}" for i, why in sorted(failed.items()))
            raise LongformError(f"{len(failed)} of {shards} shards failed ({named}); run the same command again to"
                                " resume them" + ("" if allow_partial else ", or pass --allow-partial to merge the rest"))
        files = [shard_db(settings, i, shards) for i in range(shards) if i not in failed]
        rows = session.merge_shards(files)
        reporter().note(f"merged {len(files)} shard(s): {len(session.tally.sample_ids)} samples, {rows:,} new rows")
        corpus_stages(session)
        return {**session.summary(), "shards": {"merged": len(files), "failed": failed}}


async def _run_local(_deployment: str, config: str, shards: int, prompts: str | None,
                     limit: int | None) -> dict[int, str]:
    """Each shard in its own process (`longform build-shard`), all at once; {shard: why it failed or ""}."""
    async def one(i: int) -> tuple[int, str]:
        args = [sys.executable, "-m", "longform.cli", "build-shard", "--config", config, "--shard", str(i),
                "--shards", str(shards)]
        args += ["--prompts", prompts] if prompts else []
        args += ["--limit", str(limit)] if limit else []
        proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        lines = [line for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
        return i, "" if proc.returncode == 0 else (lines[-1] if lines else f"exit code {proc.returncode}")

    return dict(await asyncio.gather(*(one(i) for i in range(shards))))


async def _run_deployments(deployment: str, config: str, shards: int, prompts: str | None,
                           limit: int | None) -> dict[int, str]:
    """One run of the `build-shard` deployment per shard, on whatever workers poll its pool."""
    from prefect.deployments import run_deployment

    async def one(i: int) -> tuple[int, str]:
        try:
            run = await run_deployment(deployment, timeout=None, parameters={
                "config": str(Path(config).resolve()), "shard": i, "shards": shards, "prompts": prompts,
                "limit": limit})
        except Exception as e:  # an unknown deployment, an unreachable API
            return i, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        state = run.state
        return i, "" if state is not None and state.is_completed() else \
            f"flow run {run.name} ended {state.name if state else 'without a state'}"

    return dict(await asyncio.gather(*(one(i) for i in range(shards))))
