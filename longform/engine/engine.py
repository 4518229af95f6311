"""The engine (see the package's docstring for what it owns)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, Sequence

import httpx
import openai

from longform import stopping
from longform.clock import now
from longform.engine.endpoint import Endpoint
from longform.engine.breaker import ErrorRateBreaker
from longform.engine.cache_key import request_key
from longform.engine.dialects import describe, logprobs_from_row, parse_answer, request_body
from longform.engine.health import EndpointHealth
from longform.engine.lanes import Lane
from longform.engine.ledger import RequestLedger
from longform.engine.messages import ChatRequest, Completion, RequestFailed, StageStats
from longform.engine.retry import FINAL, RATE_LIMITED, RetryPolicy, classify, retry_after_s
from longform.engine.router import Router
from longform.engine.throttle import AdaptiveLimiter
from longform.errors import LongformError
from longform.reasons import FailureReason


class Engine:
    def __init__(self, endpoints: Endpoint | Sequence[Endpoint], store: RequestLedger, *, run_id: str, timeout_s: float,
                 retry: RetryPolicy, concurrency: int | None = None, breaker: ErrorRateBreaker | None = None,
                 health: type[EndpointHealth] | Any = EndpointHealth, routing: str = "affinity"):
        endpoints = [endpoints] if isinstance(endpoints, Endpoint) else list(endpoints)
        if not endpoints:
            raise ValueError("an engine needs at least one endpoint")
        self.lanes = [Lane(i, ep, concurrency=ep.concurrency or concurrency or 1, timeout_s=timeout_s, health=health())
                      for i, ep in enumerate(endpoints)]
        self.router = Router(self.lanes, routing)
        self.endpoint = endpoints[0]   # what the pool serves: model, dialect, window (the same on each)
        self.model = self.endpoint.model
        self._store = store
        self._run_id = run_id
        self._retry = retry
        self._breaker = breaker or ErrorRateBreaker(window=0, max_rate=1.0)
        self.stats: dict[str, StageStats] = {}
        self.started = time.monotonic()

    @property
    def limiter(self) -> AdaptiveLimiter:
        """The first endpoint's limiter (the only one of a single-endpoint engine)."""
        return self.lanes[0].limiter

    @property
    def lowest_concurrency(self) -> int:
        return min(lane.limiter.lowest for lane in self.lanes)

    async def check(self) -> None:
        """Fail fast, with the URL, if no endpoint answers or one serves another model than the rest.

        An endpoint that cannot be reached starts down (probed after its cool-down) as long as
        another one answers: one dead node should not stop a fleet from starting.
        """
        results = await asyncio.gather(*(self._served(lane) for lane in self.lanes))
        unreachable = [(lane, error) for lane, (served, error) in zip(self.lanes, results) if served is None]
        if len(unreachable) == len(self.lanes):
            raise LongformError("; ".join(f"{lane.name}: endpoint not usable ({error})" for lane, error in unreachable))
        for lane, error in unreachable:
            lane.health.down(f"unreachable at start ({error})")
        for lane, (served, _) in zip(self.lanes, results):
            if served is None:
                continue
            if self.model is None:
                if len(served) != 1:
                    raise LongformError(f"{lane.name}: serves {served or 'no models'}; set [endpoint] model")
                self.model = served[0]
            elif served and self.model not in served:
                raise LongformError(f"{lane.name}: model {self.model!r} not served"
                                    f" (available: {', '.join(served)}); every endpoint of a pool must serve it")

    async def _served(self, lane: Lane) -> tuple[list[str] | None, str]:
        try:
            return [m.id async for m in lane.client.models.list()], ""
        except (openai.APIConnectionError, openai.APIStatusError) as e:
            return None, describe(e)

    async def load_adapters(self, adapters: dict[str, str]) -> None:
        """Load LoRA adapters (served name → directory) into every endpoint of the pool through
        vLLM's runtime LoRA API, so requests can ask for them by name. The server must run with
        `--enable-lora` and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and see the directories; an
        adapter it already has counts as loaded (a resumed build loads the same names again)."""
        for lane in self.lanes:
            if not lane.available():
                continue  # a down endpoint gets no samples; routing will not send it these
            for name, path in adapters.items():
                try:
                    await lane.client.post("/load_lora_adapter", body={"lora_name": name, "lora_path": path},
                                           cast_to=httpx.Response)
                except openai.APIStatusError as e:
                    if "already" in e.response.text:
                        continue
                    raise LongformError(f"{lane.name}: could not load LoRA adapter {name!r} ({describe(e)}); start"
                                        " vLLM with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, with"
                                        f" {path} readable by it") from None
                except openai.APIConnectionError as e:
                    raise LongformError(f"{lane.name}: could not load LoRA adapter {name!r} ({describe(e)})") from None

    async def close(self) -> None:
        await asyncio.gather(*(lane.client.close() for lane in self.lanes))

    def totals(self) -> StageStats:
        total = StageStats()
        for s in list(self.stats.values()):
            for name in ("requests", "attempts", "cache_hits", "tokens_in", "tokens_out", "truncated"):
                setattr(total, name, getattr(total, name) + getattr(s, name))
            total.errors.update(s.errors)
        return total

    def body(self, req: ChatRequest) -> dict[str, Any]:
        return request_body(self.endpoint, self.model, req)

    async def complete(self, req: ChatRequest) -> Completion:
        body = self.body(req)
        key = request_key(body, sample_index=req.sample_index, template=req.template)
        stats = self.stats.setdefault(req.stage, StageStats())
        hit = self._store.cached_answer(key)
        if hit is not None:
            stats.cache_hits += 1
            return Completion(key, hit["response_text"], hit["finish_reason"], hit["tokens_in"] or 0,
                              hit["tokens_out"] or 0, cached=True, logprobs=logprobs_from_row(hit.get("logprobs")))

        started = time.monotonic()
        if stats.first_sent is None:
            stats.first_sent = started
        answer, attempts, lane = await self._send(req, key, body, stats, started)
        text, finish, tokens_in, tokens_out, logprobs = answer
        if not text.strip() and not req.allow_empty:
            # Never cached: an empty answer is not an answer, and a rerun should ask again.
            self._record(req, key, body, stats, started, attempts, lane, error=FailureReason.EMPTY_CONTENT,
                         detail=f"finish_reason={finish}", tokens=(tokens_in, tokens_out))
            raise RequestFailed(key, FailureReason.EMPTY_CONTENT, f"the model returned no text (finish_reason={finish})")
        self._record(req, key, body, stats, started, attempts, lane, text=text, finish=finish,
                     tokens=(tokens_in, tokens_out), logprobs=logprobs)
        return Completion(key, text, finish, tokens_in, tokens_out, cached=False, logprobs=logprobs)

    async def _send(self, req: ChatRequest, key: str, body: dict, stats: StageStats,
                    started: float) -> tuple[tuple[str, str | None, int, int, list | None], int, Lane]:
        """((text, finish, tokens in, tokens out), HTTP attempts, the endpoint that answered),
        retrying as retry.py says; a final failure is recorded and raised."""
        attempts = rate_waits = 0
        failed_on: set[int] = set()
        while True:
            lane, chosen = self.router.pick(req.sample_id, frozenset(failed_on))
            if not chosen and attempts:
                # No endpoint left that has not failed this request or is not down: back off, as on a
                # single endpoint, then pick again (a cool-down may have ended meanwhile).
                await asyncio.sleep(self._retry.backoff(attempts))
                lane, _ = self.router.pick(req.sample_id, frozenset(failed_on))
            await lane.limiter.acquire(req.priority)
            if (stop := self._stop_error()) is not None:
                lane.limiter.release()
                raise stop
            attempts += 1
            stats.attempts += 1
            lane.stats.attempts += 1
            lane.health.sending()
            if lane.stats.first_sent is None:
                lane.stats.first_sent = time.monotonic()
            try:
                answer = await self._post(lane, body)
            except Exception as exc:  # classified below; anything unknown is final
                lane.limiter.release()
                kind, error = classify(exc)
                if kind == RATE_LIMITED:
                    lane.limiter.on_rate_limited()
                    rate_waits += 1
                    attempts -= 1  # waiting out load is not a failed attempt
                    if rate_waits <= self._retry.max_rate_limit_waits:
                        await asyncio.sleep(max(retry_after_s(exc) or 0.0, self._retry.backoff(rate_waits)))
                        continue
                elif kind != FINAL:
                    lane.failed_attempts += 1
                    lane.health.failed(error)
                    failed_on.add(lane.index)
                    if attempts < self._retry.max_attempts:
                        continue  # at once on another endpoint if there is one, else after backoff (above)
                self._record(req, key, body, stats, started, max(attempts, 1), lane, error=error,
                             detail=describe(exc))
                raise RequestFailed(key, error, f"{lane.name}: {describe(exc)}") from None
            lane.limiter.release()
            lane.limiter.on_success()
            lane.health.succeeded()
            return answer, attempts, lane

    async def _post(self, lane: Lane, body: dict) -> tuple[str, str | None, int, int, list | None]:
        # The client's low-level post with the raw response: `create(**body)` re-validates every
        # message through the SDK's typed-dict transform, and building its pydantic response
        # objects costs about a millisecond per request; neither is needed to read four fields.
        payload = {k: v for k, v in body.items() if k != "extra_body"} | body.get("extra_body", {})
        path = "/completions" if "prompt" in body else "/chat/completions"
        response = await lane.client.post(path, body=payload, cast_to=httpx.Response)
        return parse_answer(body, json.loads(response.content))

    def _stop_error(self) -> LongformError | None:
        """Checked with a slot in hand, just before sending, so nothing queued slips through."""
        if (reason := stopping.stop_reason()) is not None:
            return reason
        if (why := self._breaker.tripped()) is not None:
            where = ", ".join(lane.name for lane in self.lanes)
            return LongformError(f"{where}: stopping the build, the endpoint looks broken:"
                                 f" {why}; check [endpoint] base_url and model")
        return None

    def _record(self, req: ChatRequest, key: str, body: dict, stats: StageStats, started: float,
                attempts: int, lane: Lane, *, text: str | None = None, finish: str | None = None,
                tokens: tuple[int, int] = (0, 0), error: str | None = None, detail: str = "",
                logprobs: list | None = None) -> None:
        self._breaker.record(error)
        done = time.monotonic()
        for s in (stats, lane.stats):
            s.last_done = done
            s.requests += 1
            s.tokens_in += tokens[0]
            s.tokens_out += tokens[1]
            if finish == "length" and not req.stops_at_cap:
                s.truncated += 1
            if error is not None:
                s.errors[error] += 1
        self._store.add_request({
            "request_id": uuid.uuid4().hex, "key": key, "run_id": self._run_id, "stage": req.stage,
            "model": body["model"], "sample_id": req.sample_id, "prompt_id": req.prompt_id, "section": req.section,
            "endpoint": lane.name, "response_text": text, "finish_reason": finish, "tokens_in": tokens[0],
            "tokens_out": tokens[1], "latency_s": done - started, "attempts": attempts,
            "error": None if error is None else f"{error}: {lane.name}: {detail}"[:2000], "created_at": now(),
            "logprobs": None if logprobs is None else json.dumps(logprobs, ensure_ascii=False),
        }, {**body, "sample_index": req.sample_index, "template": req.template})
