"""One build's resources and bookkeeping: the store, the run row, the endpoint and the engine.

Opening a session records the run as `running`; leaving it records how it ended (finished, failed
or interrupted) with its summary, stops the embedded server and flushes the store, whatever
happened in between.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import AsyncIterator, Iterator

from longform.clock import timed_id
from longform.prompts import Prompt, refuse_changed_ids
from longform.config import Settings
from longform.engine import Endpoint
from longform.models.endpoints import open_pool
from longform.engine import Engine, StageStats
from longform.engine.breaker import ErrorRateBreaker
from longform.engine.health import EndpointHealth
from longform.engine.retry import RetryPolicy
from longform.errors import LongformError, first_line
from longform.lengths import measure
from longform.build.reporting import reporter
from longform.stopping import Interrupted
from longform.store import Store
from longform.models.hf_model import EMBEDDED
from longform.models.training import Adapter
from longform.store.schema import APPEND_TABLES


@dataclass
class Tally:
    samples: int = 0
    new_samples: int = 0
    length_scores: list[float] = field(default_factory=list)
    failures: Counter = field(default_factory=Counter)
    sample_ids: list[str] = field(default_factory=list)
    export_dir: str | None = None
    scoring: dict | None = None
    accepted: int | None = None      # --until-accepted builds only
    candidates: int | None = None
    failed_stage: dict | None = None  # {"stage", "reason"} of a corpus-wide stage that failed
    judgment_ids: list[str] = field(default_factory=list)
    stage_s: dict[str, float] = field(default_factory=dict)  # seconds per corpus-wide stage
    # A sharded build's parent: what each merged shard's last run generated.
    shard_tokens_out: dict[int, int] = field(default_factory=dict)


class StageFailed(LongformError):
    """A corpus-wide stage failed after the samples were written and stored."""


class BuildSession:
    def __init__(self, settings: Settings, run_id: str, store: Store, engine: Engine | None,
                 resumed: list[tuple[str, str]], judge_engine: Engine | None = None, *, shard: bool = False):
        """`engine` is None for a session that only merges and runs the corpus-wide stages (the
        parent of a sharded build): it calls no model. A shard's summary lists what it wrote."""
        self.settings = settings
        self.run_id = run_id
        self.resumed = resumed
        self.store = store
        self.engine = engine
        self.judge_engine = judge_engine or engine
        self.shard = shard
        self.judge_model: str | None = self.judge_engine.model if self.judge_engine else None
        self.tally = Tally()
        self.active_samples = asyncio.Semaphore(settings.active_samples)
        self._started = time.monotonic()

    @asynccontextmanager
    async def engine_for(self, endpoint: Endpoint, concurrency: int = 1) -> AsyncIterator[Engine]:
        """Another engine for this build (e.g. on a server of retrained roles): same store, run and
        retry policy; its counters add to the build's."""
        engine = new_engine(self.settings, endpoint, self.store, self.run_id, concurrency)
        engine.stats = self.engine.stats
        try:
            await engine.check()
            yield engine
        finally:
            await engine.close()

    @asynccontextmanager
    async def adapter_engine(self, adapters: list[Adapter]) -> AsyncIterator[Engine]:
        """An engine on which requests may name these LoRA adapters as their model. On a remote pool
        (vLLM) they are loaded into the running servers and the build's own engine serves them, with
        its routing and limits. On the embedded endpoint, adapters of the embedded model are served
        by a second llama.cpp server, applied to its GGUF weights; adapters of another base model
        (`[self_lengthen] train_model`) by a local transformers server."""
        primary = self.settings.primary
        if primary.kind != "embedded":
            await self.engine.load_adapters({a.name: a.path for a in adapters})
            yield self.engine
            return
        if self.settings.lengthen_base == EMBEDDED:
            from longform.models.embedded import EmbeddedServer
            from longform.models.gguf_lora import lora_gguf

            served = {a.name: lora_gguf(a.path) for a in adapters}
            with EmbeddedServer(context_window=primary.context_window, n_threads=primary.n_threads,
                                adapters=served) as server:
                async with self.engine_for(server.endpoint(adapters[0].name, primary.dialect)) as engine:
                    yield engine
            return
        from longform.models.hf_server import HFServer

        with HFServer({a.name: a.path for a in adapters}, context_window=primary.context_window) as server:
            async with self.engine_for(server.endpoint(adapters[0].name)) as engine:
                yield engine

    @contextmanager
    def corpus_stage(self, name: str) -> Iterator[None]:
        """A stage after writing (scoring, GATEAU, export). If it fails, the run ends `failed` with
        the stage and its reason in one line: the samples are already stored, and running the same
        command again redoes only what is not cached (requests, judgments, GATEAU measures)."""
        started = time.monotonic()
        try:
            yield
        except Interrupted:
            raise
        except Exception as e:  # any failure, bug or input: the user needs the stage and a way on
            reason = str(e) if isinstance(e, LongformError) else \
                f"{type(e).__name__}: {first_line(e, '(no message)')[:500]}"
            self.tally.failed_stage = {"stage": name, "reason": reason}
            raise StageFailed(f"{name} failed: {reason} — the {self.tally.samples} written samples are stored;"
                              " run the same command again to redo this stage") from e
        finally:
            self.tally.stage_s[name] = round(self.tally.stage_s.get(name, 0.0) + time.monotonic() - started, 2)

    def record(self, result, *, new: bool, model: str) -> dict | None:
        """Store what a writer returned and count it: its extra rows (sections, Self-Lengthen steps),
        then the sample with its measured length, or the failure row. The measured length columns
        (lengths.measure), or None for a failure."""
        for table, rows in result.extra_rows().items():
            # Before the sample row: one flush commits both, but a reader of the batch sees parents after children.
            self.store.add_many(table, ({"run_id": self.run_id, **row} if "run_id" in APPEND_TABLES[table] else row
                                        for row in rows))
        if result.failed:
            self.store.add("failures", result.failure_row(self.run_id))
            self.tally.failures[f"{result.stage}:{result.reason}"] += 1
            return None
        measured = measure(result.text, result.spec)
        self.store.add("samples", {**result.sample_row(self.run_id, model), **measured})
        self.tally.samples += 1
        self.tally.new_samples += int(new)
        self.tally.length_scores.append(measured["length_score"])
        self.tally.sample_ids.append(result.sample_id)
        return measured

    def register_prompts(self, prompts: list[Prompt], source: str) -> None:
        """Store the build's prompts; a stored id given again must mean the same prompt."""
        known = self.store.known_prompts([p.prompt_id for p in prompts])
        refuse_changed_ids(prompts, known, source=source, where=self.store.path)
        self.store.add_prompts(prompts, source)

    def merge_shards(self, files: dict[int, Path]) -> int:
        """Merge each shard's database (by shard) into this one (idempotent); what the shards wrote
        becomes this run's to score: their samples, judgments and judge model. The rows added."""
        rows, judge_models = 0, set()
        for index, path in files.items():
            added, shard = self.store.merge_shard(path, self.settings.build.name)
            self.tally.shard_tokens_out[index] = shard.get("tokens_out", 0)
            rows += added
            self.tally.sample_ids += shard.get("sample_ids", [])
            self.tally.judgment_ids += shard.get("judgment_ids", [])
            self.tally.samples += shard.get("samples", 0)
            self.tally.failures.update(shard.get("failures", {}))
            judge_models.update(filter(None, [shard.get("judge_model")]))
        if len(judge_models) > 1:
            raise LongformError(f"the shards were judged by different models ({', '.join(sorted(judge_models))});"
                                " one length-control fit needs one judge")
        self.judge_model = next(iter(judge_models), None)
        return rows

    def publish_stats(self) -> None:
        if self.engine is None:
            return
        self.store.put_run_stats(self.run_id, {stage: s.as_row() for stage, s in list(self.engine.stats.items())})
        self.store.put_endpoint_stats(self.run_id, self.endpoint_rows())

    def endpoint_rows(self) -> list[dict]:
        if self.engine is None:
            return []
        pools = [("writers", self.engine)]
        if self.judge_engine is not self.engine:
            pools.append(("judges", self.judge_engine))
        return [{"pool": pool, "endpoint": lane.name, **lane.as_row()} for pool, engine in pools for lane in engine.lanes]

    async def publish_stats_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.publish_stats()

    def summary(self) -> dict:
        totals = self.engine.totals() if self.engine else StageStats()
        scores = self.tally.length_scores
        return {
            "run_id": self.run_id,
            "name": self.settings.build.name,
            "resumed_runs": [run_id for run_id, _ in self.resumed],
            "model": self.engine.model if self.engine else None,
            "judge_model": self.judge_model,
            "samples": self.tally.samples,
            "accepted": self.tally.accepted,
            "candidates": self.tally.candidates,
            "new_samples": self.tally.new_samples,
            "failures": dict(self.tally.failures),
            "median_length_score": round(statistics.median(scores), 2) if scores else None,
            "requests_sent": totals.requests,
            "http_attempts": totals.attempts,
            "cache_hits": totals.cache_hits,
            "tokens_in": totals.tokens_in,
            "tokens_out": totals.tokens_out,
            "truncated": totals.truncated,
            "request_errors": dict(totals.errors),
            "lowest_concurrency": self.engine.lowest_concurrency if self.engine else None,
            "endpoints": {f"{row['pool']} {row['endpoint']}": {k: row[k] for k in ("state", "requests", "tokens_out",
                                                                                 "failed_attempts", "reason")}
                          for row in self.endpoint_rows()},
            "spilled_samples": self.engine.router.spilled if self.engine else 0,
            "wall_s": round(time.monotonic() - self._started, 2),
            "stage_s": self.tally.stage_s,
            "scoring": self.tally.scoring,
            "failed_stage": self.tally.failed_stage,
            "export_dir": self.tally.export_dir,
            "by_stage": {stage: {"requests": s.requests, "cache_hits": s.cache_hits,
                                 "tokens_in": s.tokens_in, "tokens_out": s.tokens_out}
                         for stage, s in (self.engine.stats.items() if self.engine else [])},
            # A shard's summary is how the parent learns what it wrote (flows/shards.py).
            **({"sample_ids": self.tally.sample_ids, "judgment_ids": self.tally.judgment_ids} if self.shard else {}),
        }


def new_engine(settings: Settings, endpoints: Endpoint | list[Endpoint], store: Store, run_id: str,
               concurrency: int | None = None) -> Engine:
    """An engine over `endpoints` with the writers' first endpoint's retry, breaker and health settings."""
    ep = settings.primary
    return Engine(endpoints, store, run_id=run_id, concurrency=concurrency, timeout_s=ep.timeout_s,
                  retry=RetryPolicy(ep.max_attempts, ep.max_rate_limit_waits, ep.backoff_base_s, ep.backoff_max_s),
                  breaker=ErrorRateBreaker(ep.error_window, ep.max_error_rate),
                  health=partial(EndpointHealth, window=ep.error_window, max_rate=ep.max_error_rate,
                                 cooldown_s=ep.cooldown_s), routing=settings.build.routing)


@asynccontextmanager
async def _engines(settings: Settings, store: Store, run_id: str) -> AsyncIterator[tuple[Engine, Engine]]:
    """The writers' engine and the judges' (the same one unless [[judges.endpoints]] is set), checked."""
    with ExitStack() as stack:
        engine = new_engine(settings, stack.enter_context(open_pool(settings.writer_endpoints)), store, run_id)
        judge_engine = engine
        if settings.judges.endpoints:
            judge_engine = new_engine(settings, stack.enter_context(open_pool(settings.judges.endpoints)),
                                      store, run_id)
            judge_engine.stats = engine.stats  # one set of per-stage counters for the run
        try:
            await engine.check()
            if judge_engine is not engine:
                await judge_engine.check()
            yield engine, judge_engine
        finally:
            await engine.close()
            if judge_engine is not engine:
                await judge_engine.close()


def new_run_id() -> str:
    return timed_id("r")


@asynccontextmanager
async def build_session(settings: Settings, *, prompts_path: Path | None, prefect_flow_run_id: str | None,
                        shard: tuple[int, int] | None = None) -> AsyncIterator[BuildSession]:
    """A build's store, run row and engines (its endpoints started and checked)."""
    async with _run_record(settings, prompts_path, prefect_flow_run_id) as (store, run_id, resumed, holder):
        async with _engines(settings, store, run_id) as (engine, judge_engine):
            session = holder[0] = BuildSession(settings, run_id, store, engine, resumed, judge_engine,
                                               shard=shard is not None)
            publisher = asyncio.create_task(session.publish_stats_every(2.0))
            try:
                yield session
            finally:
                publisher.cancel()
                session.publish_stats()


@asynccontextmanager
async def corpus_session(settings: Settings, *, prompts_path: Path | None,
                         prefect_flow_run_id: str | None) -> AsyncIterator[BuildSession]:
    """A run that calls no model: it merges shards and runs the corpus-wide stages."""
    async with _run_record(settings, prompts_path, prefect_flow_run_id) as (store, run_id, resumed, holder):
        holder[0] = BuildSession(settings, run_id, store, None, resumed)
        yield holder[0]


@asynccontextmanager
async def _run_record(settings: Settings, prompts_path: Path | None, prefect_flow_run_id: str | None):
    """The store and the run's row: `running` while inside, then finished, failed or interrupted,
    with the summary of the session put in `holder[0]`."""
    store = Store.open(settings.build.db, live=True)
    run_id = new_run_id()
    holder: list[BuildSession | None] = [None]
    status = "failed"
    try:
        # Holding the write lock, any run still `running` belongs to a killed process.
        resumed = store.interrupt_stale_runs()
        for old_run, name in resumed:
            reporter().note(f"resuming interrupted run {old_run} ({name}): answered requests come from the cache")
        store.start_run(run_id, settings.build.name, settings.snapshot(),
                        str(prompts_path) if prompts_path else None, prefect_flow_run_id)
        try:
            yield store, run_id, resumed, holder
            status = "finished"
        except (Interrupted, KeyboardInterrupt, asyncio.CancelledError):
            status = "interrupted"
            raise
    finally:
        try:
            store.finish_run(run_id, status, holder[0].summary() if holder[0] else {})
        finally:
            store.close()
