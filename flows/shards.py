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
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from flows.pipeline import corpus_stages, write_stages
from flows.stages import register_prompts
from longform.build.inputs import load_build_inputs
from longform.errors import LongformError
from longform.build.reporting import reporter
from longform.build.session import build_session, corpus_session
from longform.build.shards import check_shards, set_aside_if_unreadable, shard_db, shard_prompts, shard_settings
from longform.clock import now


async def write_one_shard(config: str, shard: int, shards: int, prompts: str | None = None,
                          limit: int | None = None, flow_run_id: str | None = None) -> dict:
    """Write shard `shard` of `shards` into its own database; its summary names what it wrote."""
    check_shards(shard, shards)
    settings, prompts_path, prompt_list = load_build_inputs(Path(config), prompts=prompts, limit=limit)
    settings = shard_settings(settings, shard, shards)
    mine = shard_prompts(prompt_list, shard, shards)
    if (aside := set_aside_if_unreadable(settings.build.db)) is not None:
        # On stderr: a worker's log, or the terminal of `longform build-shard`.
        print(f"warning: shard {shard}: {settings.build.db} could not be read (a killed writer's); moved to"
              f" {aside.name} and the shard starts over", file=sys.stderr)
    async with build_session(settings, prompts_path=prompts_path, prefect_flow_run_id=flow_run_id,
                             shard=(shard, shards)) as session:
        await write_stages(session, mine, str(prompts_path), until_accepted=None)
        return session.summary()


# No Prefect retries in the run's own process: a failed or lost run is submitted again by the parent
# (`_run_shard`, up to [build] shard_attempts), which any worker may take — a bad node's shard can
# land on a good one — and each run is a `shard_attempts` row. Retries here as well would run a shard
# that fails for its own reason attempts × (retries + 1) times, 10 s apart, on the same node.
@flow(name="build-shard")
async def build_shard(config: str, shard: int, shards: int, prompts: str | None = None,
                      limit: int | None = None) -> dict:
    """One shard, as a Prefect flow run; run again, it resumes from its file's cache."""
    summary = await write_one_shard(config, shard, shards, prompts, limit, flow_run_id=flow_run.id)
    return {k: summary[k] for k in ("run_id", "samples", "failures", "requests_sent", "cache_hits")}


@flow(name="build-sharded")
async def build_sharded(config: str, shards: int, prompts: str | None = None, limit: int | None = None,
                        db: str | None = None, local: bool = False, allow_partial: bool = False) -> dict:
    """Run the shards (Prefect deployment runs, or local processes), merge them, then score, select,
    run GATEAU and export once on the merged database. A shard whose run crashed or failed is run
    again, up to [build] shard_attempts, with no one at the keyboard."""
    check_shards(0, shards)
    settings, prompts_path, prompt_list = load_build_inputs(Path(config), prompts=prompts, db=db, limit=limit,
                                                            shards=shards)
    # The parent's run is `running` while its shards are, so `longform status` finds them.
    async with corpus_session(settings, prompts_path=prompts_path, prefect_flow_run_id=flow_run.id) as session:
        # Registered here first, in file order, as an unsharded build would: "earlier" prompts win
        # near-duplicate checks, whatever order the shards finish in.
        register_prompts.fn(session, prompt_list, str(prompts_path))
        job = ShardJob(config, shards, prompts, limit)
        submit = _run_local if local else partial(_run_deployment, settings.build.shard_deployment)
        outcomes = await asyncio.gather(*(_run_shard(i, submit, job, settings, session) for i in range(shards)))
        failed = {i: why for i, why, _, _ in outcomes if why}
        attempts = {i: n for i, _, n, _ in outcomes}
        if failed and (not allow_partial or len(failed) == shards):
            named = "; ".join(f"shard {i}: {why}" for i, why in sorted(failed.items()))
            raise LongformError(f"{len(failed)} of {shards} shards failed ({named}); run the same command again to"
                                " resume them" + ("" if allow_partial else ", or pass --allow-partial to merge the rest"))
        files = {i: shard_db(settings, i, shards) for i in range(shards) if i not in failed}
        rows = session.merge_shards(files)
        reporter().note(f"merged {len(files)} shard(s): {len(session.tally.sample_ids)} samples, {rows:,} new rows")
        corpus_stages(session)
        resubmitted = sorted(i for i, n in attempts.items() if n > 1 and i not in failed)
        return {**session.summary(), "shards": {
            "merged": len(files), "failed": failed, "attempts": attempts, "resubmitted": len(resubmitted),
            "started_over": sorted(i for i, _, _, over in outcomes if over),
            # What the re-submitted shards' last runs generated: an upper bound on the work redone.
            "resubmitted_tokens_out": sum(session.tally.shard_tokens_out.get(i, 0) for i in resubmitted)}}


@dataclass(frozen=True)
class ShardJob:
    config: str
    shards: int
    prompts: str | None
    limit: int | None


@dataclass(frozen=True)
class Ended:
    """How one run of a shard ended."""
    ok: bool
    state: str
    message: str
    attempt_id: str
    name: str | None = None
    worker: str | None = None


async def _run_shard(i: int, submit, job: ShardJob, settings, session) -> tuple[int, str, int, bool]:
    """Shard `i` run until it completes or [build] shard_attempts runs ended otherwise: (shard, why
    it failed or "", attempts made, whether a re-run started over because its file was gone). Each
    attempt is a `shard_attempts` row."""
    most, started_over = settings.build.shard_attempts, False
    path = shard_db(settings, i, job.shards)
    for attempt in range(1, most + 1):
        found = path.exists()
        started_over |= attempt > 1 and not found   # its file went with its machine: from scratch
        started = now()
        ended = await submit(i, attempt, job, session.run_id)
        session.store.add("shard_attempts", {
            "attempt_id": ended.attempt_id, "run_id": session.run_id, "shard": i, "attempt": attempt,
            "flow_run_name": ended.name, "worker": ended.worker, "state": ended.state, "message": ended.message[:2000],
            "file_found": found, "started_at": started, "ended_at": now()})
        if ended.ok:
            return i, "", attempt, started_over
        if attempt < most:
            reporter().note(f"shard {i}: attempt {attempt} ended {ended.state} ({ended.message}); submitting it again")
    return i, f"{ended.state} in all {most} attempts (last: {ended.message})", most, started_over


async def _run_local(i: int, attempt: int, job: ShardJob, run_id: str) -> Ended:
    """The shard in its own process here (`longform build-shard`)."""
    args = [sys.executable, "-m", "longform.cli", "build-shard", "--config", job.config, "--shard", str(i),
            "--shards", str(job.shards)]
    args += ["--prompts", job.prompts] if job.prompts else []
    args += ["--limit", str(job.limit)] if job.limit else []
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    lines = [line for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
    ok = proc.returncode == 0
    return Ended(ok, "Completed" if ok else ("Crashed" if proc.returncode < 0 else "Failed"),
                 "" if ok else (lines[-1] if lines else f"exit code {proc.returncode}"),
                 f"{run_id}-shard{i}-attempt{attempt}", worker=f"local pid {proc.pid}")


async def _run_deployment(deployment: str, i: int, attempt: int, job: ShardJob, run_id: str) -> Ended:
    """One run of the `build-shard` deployment, on whatever worker polls its pool; it returns when the
    run reaches a final state, which for a lost machine is the Crashed state the heartbeat
    automation sets (flows/recovery.py)."""
    from prefect.deployments import run_deployment

    try:
        run = await run_deployment(deployment, timeout=None, parameters={
            "config": str(Path(job.config).resolve()), "shard": i, "shards": job.shards, "prompts": job.prompts,
            "limit": job.limit})
    except Exception as e:  # an unknown deployment, an unreachable API
        why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return Ended(False, "NotSubmitted", why, f"{run_id}-shard{i}-attempt{attempt}")
    state = run.state
    ok = state is not None and state.is_completed()
    return Ended(ok, state.name if state else "Unknown", "" if ok else (state.message if state else "") or "",
                 str(run.id), run.name, run.infrastructure_pid)
