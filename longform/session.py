"""One build's resources and bookkeeping: the store, the run row, the endpoint and the engine.

Opening a session records the run as `running`; leaving it records how it ended (finished, failed
or interrupted) with its summary, stops the embedded server and flushes the store, whatever
happened in between.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections import Counter
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Iterator

from longform.config import Settings
from longform.endpoint import Endpoint, open_endpoint
from longform.engine import Engine
from longform.engine.breaker import ErrorRateBreaker
from longform.engine.retry import RetryPolicy
from longform.errors import LongformError
from longform.progress import reporter
from longform.stopping import Interrupted
from longform.store import Store


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


class StageFailed(LongformError):
    """A corpus-wide stage failed after the samples were written and stored."""


class BuildSession:
    def __init__(self, settings: Settings, run_id: str, store: Store, engine: Engine,
                 resumed: list[tuple[str, str]]):
        self.settings = settings
        self.run_id = run_id
        self.resumed = resumed
        self.store = store
        self.engine = engine
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

    @contextmanager
    def corpus_stage(self, name: str) -> Iterator[None]:
        """A stage after writing (scoring, GATEAU, export). If it fails, the run ends `failed` with
        the stage and its reason in one line: the samples are already stored, and running the same
        command again redoes only what is not cached (requests, judgments, GATEAU measures)."""
        try:
            yield
        except Interrupted:
            raise
        except Exception as e:  # any failure, bug or input: the user needs the stage and a way on
            reason = str(e) if isinstance(e, LongformError) else f"{type(e).__name__}: {_first_line(e)}"
            self.tally.failed_stage = {"stage": name, "reason": reason}
            raise StageFailed(f"{name} failed: {reason} — the {self.tally.samples} written samples are stored;"
                              " run the same command again to redo this stage") from e

    def publish_stats(self) -> None:
        self.store.put_run_stats(self.run_id, {stage: s.as_row() for stage, s in list(self.engine.stats.items())})

    async def publish_stats_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.publish_stats()

    def summary(self) -> dict:
        totals = self.engine.totals()
        scores = self.tally.length_scores
        return {
            "run_id": self.run_id,
            "name": self.settings.build.name,
            "resumed_runs": [run_id for run_id, _ in self.resumed],
            "model": self.engine.model,
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
            "lowest_concurrency": self.engine.limiter.lowest,
            "wall_s": round(time.monotonic() - self._started, 2),
            "scoring": self.tally.scoring,
            "failed_stage": self.tally.failed_stage,
            "export_dir": self.tally.export_dir,
            "by_stage": {stage: {"requests": s.requests, "cache_hits": s.cache_hits,
                                 "tokens_in": s.tokens_in, "tokens_out": s.tokens_out}
                         for stage, s in self.engine.stats.items()},
        }


def new_engine(settings: Settings, endpoint: Endpoint, store: Store, run_id: str, concurrency: int) -> Engine:
    ep = settings.endpoint
    return Engine(endpoint, store, run_id=run_id, concurrency=concurrency, timeout_s=ep.timeout_s,
                  retry=RetryPolicy(ep.max_attempts, ep.max_rate_limit_waits, ep.backoff_base_s, ep.backoff_max_s),
                  breaker=ErrorRateBreaker(ep.error_window, ep.max_error_rate))


def new_run_id() -> str:
    return f"r-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


@asynccontextmanager
async def build_session(settings: Settings, *, prompts_path: Path | None,
                        prefect_flow_run_id: str | None) -> AsyncIterator[BuildSession]:
    store = Store.open(settings.build.db)
    run_id = new_run_id()
    session: BuildSession | None = None
    status = "failed"
    try:
        # Holding the write lock, any run still `running` belongs to a killed process.
        resumed = store.interrupt_stale_runs()
        for old_run, name in resumed:
            reporter().note(f"resuming interrupted run {old_run} ({name}): answered requests come from the cache")
        store.start_run(run_id, settings.build.name, settings.snapshot(),
                        str(prompts_path) if prompts_path else None, prefect_flow_run_id)
        ep = settings.endpoint
        with open_endpoint(ep) as endpoint:
            engine = new_engine(settings, endpoint, store, run_id, ep.max_concurrency)
            try:
                await engine.check()
                session = BuildSession(settings, run_id, store, engine, resumed)
                publisher = asyncio.create_task(session.publish_stats_every(2.0))
                try:
                    yield session
                finally:
                    publisher.cancel()
                    session.publish_stats()
                status = "finished"
            except (Interrupted, KeyboardInterrupt, asyncio.CancelledError):
                status = "interrupted"
                raise
            finally:
                await engine.close()
    finally:
        try:
            store.finish_run(run_id, status, session.summary() if session else {})
        finally:
            store.close()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:500] if text else "(no message)"
