"""The engine: the only code that talks to a model.

Writers and judges hand it a `ChatRequest` and await a `Completion`. It answers from the request
cache when it can; otherwise it sends through one AsyncOpenAI client under the endpoint's adaptive
concurrency limit, retrying what is transient (retry.py), and records every request that reached
the network, answered or failed, through the store.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
from openai.types import Completion as TextCompletion
from openai.types.chat import ChatCompletion

from longform.endpoint import Endpoint
from longform import stopping
from longform.engine.breaker import ErrorRateBreaker
from longform.engine.cache_key import request_key
from longform.engine.retry import FINAL, RATE_LIMITED, RetryPolicy, classify, retry_after_s
from longform.engine.throttle import AdaptiveLimiter
from longform.errors import LongformError
from longform.store import Store, now


@dataclass(frozen=True)
class ChatRequest:
    stage: str
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = None
    json_schema: dict[str, Any] | None = None
    sample_index: int = 0
    # Identity of the prompt template that built `messages` (name and content hash).
    template: str = ""
    # The start of the assistant's answer, to be continued: the answer returned is what follows it.
    assistant_prefix: str | None = None
    # Who gets a free slot first when all are taken: lowest value first (throttle.py). Not part of
    # the request, so not of its cache key.
    priority: float = 0.0
    # A served model other than the endpoint's, e.g. one of several LoRA adapters on one server.
    model: str | None = None


@dataclass(frozen=True)
class Completion:
    key: str
    text: str
    finish_reason: str | None
    tokens_in: int
    tokens_out: int
    cached: bool

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class RequestFailed(Exception):
    def __init__(self, key: str, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.key = key
        self.reason = reason
        self.detail = detail


@dataclass
class StageStats:
    requests: int = 0       # answered or failed after reaching the network
    attempts: int = 0       # HTTP attempts, retries included
    cache_hits: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    truncated: int = 0
    errors: Counter = field(default_factory=Counter)
    first_sent: float | None = None
    last_done: float | None = None

    def as_row(self) -> dict:
        wall = (self.last_done - self.first_sent) if self.first_sent and self.last_done else 0.0
        return {"requests": self.requests, "attempts": self.attempts, "cache_hits": self.cache_hits,
                "tokens_in": self.tokens_in, "tokens_out": self.tokens_out, "truncated": self.truncated,
                "errors": dict(self.errors), "wall_s": round(wall, 3)}


class Engine:
    def __init__(self, endpoint: Endpoint, store: Store, *, run_id: str, concurrency: int,
                 timeout_s: float, retry: RetryPolicy, breaker: ErrorRateBreaker | None = None):
        self.endpoint = endpoint
        self.model = endpoint.model
        self._store = store
        self._run_id = run_id
        self._retry = retry
        self._breaker = breaker or ErrorRateBreaker(window=0, max_rate=1.0)
        self.limiter = AdaptiveLimiter(concurrency)
        self.stats: dict[str, StageStats] = {}
        self.started = time.monotonic()
        # The engine owns its retries, so the client's own are off. The aiohttp transport: with
        # hundreds of requests in flight, httpx's connection pool costs more CPU than the rest of
        # the engine (benchmarks/engine_efficiency.py).
        self._client = openai.AsyncOpenAI(
            base_url=endpoint.base_url, api_key=endpoint.api_key, max_retries=0,
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            http_client=openai.DefaultAioHttpClient(),
        )

    async def check(self) -> None:
        """Fail fast, with the URL, if the endpoint is down or the model is not served."""
        try:
            served = [m.id async for m in self._client.models.list()]
        except (openai.APIConnectionError, openai.APIStatusError) as e:
            raise LongformError(f"{self.endpoint.base_url}: endpoint not usable ({_describe(e)})") from None
        if self.model is None:
            if len(served) != 1:
                raise LongformError(f"{self.endpoint.base_url}: serves {served or 'no models'};"
                                    " set [endpoint] model")
            self.model = served[0]
        elif served and self.model not in served:
            raise LongformError(f"{self.endpoint.base_url}: model {self.model!r} not served"
                                f" (available: {', '.join(served)})")

    async def close(self) -> None:
        await self._client.close()

    def totals(self) -> StageStats:
        total = StageStats()
        for s in self.stats.values():
            for name in ("requests", "attempts", "cache_hits", "tokens_in", "tokens_out", "truncated"):
                setattr(total, name, getattr(total, name) + getattr(s, name))
            total.errors.update(s.errors)
        return total

    def body(self, req: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": req.model or self.model,
            "messages": req.messages,
            "max_tokens": req.max_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
        }
        if req.assistant_prefix is not None:
            mode = self.endpoint.continuation
            if mode == "completions":
                body["prompt"] = self.endpoint.render_chat(req.messages) + req.assistant_prefix
                del body["messages"]
            elif mode == "continue_final_message":
                body["messages"] = [*req.messages, {"role": "assistant", "content": req.assistant_prefix}]
                body["extra_body"] = {"continue_final_message": True, "add_generation_prompt": False}
            else:
                raise LongformError(f"{self.endpoint.base_url}: this endpoint cannot continue an assistant"
                                    " message ([endpoint] continuation = \"none\")")
        if req.seed is not None:
            body["seed"] = req.seed
        if req.json_schema is not None and self.endpoint.dialect != "none":
            body["response_format"] = _response_format(self.endpoint.dialect, req.json_schema)
        return body

    async def complete(self, req: ChatRequest) -> Completion:
        body = self.body(req)
        key = request_key(body, sample_index=req.sample_index, template=req.template)
        stats = self.stats.setdefault(req.stage, StageStats())
        hit = self._store.cached_answer(key)
        if hit is not None:
            stats.cache_hits += 1
            return Completion(key, hit["response_text"], hit["finish_reason"], hit["tokens_in"] or 0,
                              hit["tokens_out"] or 0, cached=True)

        started = time.monotonic()
        if stats.first_sent is None:
            stats.first_sent = started
        response, attempts = await self._send(req, key, body, stats, started)
        choice = response.choices[0] if response.choices else None
        text = ((choice.text if "prompt" in body else choice.message.content) or "") if choice else ""
        finish = choice.finish_reason if choice else None
        usage = response.usage
        tokens_in = usage.prompt_tokens if usage else 0
        tokens_out = usage.completion_tokens if usage else 0
        if not text.strip():
            # Never cached: an empty answer is not an answer, and a rerun should ask again.
            self._record(req, key, body, stats, started, attempts, error="empty_content",
                         detail=f"finish_reason={finish}", tokens=(tokens_in, tokens_out))
            raise RequestFailed(key, "empty_content", f"the model returned no text (finish_reason={finish})")
        self._record(req, key, body, stats, started, attempts, text=text, finish=finish,
                     tokens=(tokens_in, tokens_out))
        return Completion(key, text, finish, tokens_in, tokens_out, cached=False)

    async def _send(self, req: ChatRequest, key: str, body: dict, stats: StageStats,
                    started: float) -> tuple[Any, int]:
        """(response, HTTP attempts), retrying as retry.py says; a final failure is recorded and raised."""
        attempts = rate_waits = 0
        while True:
            await self.limiter.acquire(req.priority)
            if (stop := self._stop_error()) is not None:
                self.limiter.release()
                raise stop
            attempts += 1
            stats.attempts += 1
            try:
                response = await self._post(body)
            except Exception as exc:  # classified below; anything unknown is final
                self.limiter.release()
                kind, error = classify(exc)
                if kind == RATE_LIMITED:
                    self.limiter.on_rate_limited()
                    rate_waits += 1
                    attempts -= 1  # waiting out load is not a failed attempt
                    if rate_waits <= self._retry.max_rate_limit_waits:
                        await asyncio.sleep(max(retry_after_s(exc) or 0.0, self._retry.backoff(rate_waits)))
                        continue
                elif kind != FINAL and attempts < self._retry.max_attempts:
                    await asyncio.sleep(self._retry.backoff(attempts))
                    continue
                self._record(req, key, body, stats, started, max(attempts, 1), error=error,
                             detail=_describe(exc))
                raise RequestFailed(key, error, _describe(exc)) from None
            self.limiter.release()
            self.limiter.on_success()
            return response, attempts

    async def _post(self, body: dict) -> Any:
        # The client's low-level post: `create(**body)` re-validates every message through the SDK's
        # typed-dict transform, which costs ~2 ms of CPU per request on long prompts (benchmarks/).
        payload = {k: v for k, v in body.items() if k != "extra_body"} | body.get("extra_body", {})
        if "prompt" in body:
            return await self._client.post("/completions", body=payload, cast_to=TextCompletion)
        return await self._client.post("/chat/completions", body=payload, cast_to=ChatCompletion)

    def _stop_error(self) -> LongformError | None:
        """Checked with a slot in hand, just before sending, so nothing queued slips through."""
        if (reason := stopping.stop_reason()) is not None:
            return reason
        if (why := self._breaker.tripped()) is not None:
            return LongformError(f"{self.endpoint.base_url}: stopping the build, the endpoint looks broken:"
                                 f" {why}; check [endpoint] base_url and model")
        return None

    def _record(self, req: ChatRequest, key: str, body: dict, stats: StageStats, started: float,
                attempts: int, *, text: str | None = None, finish: str | None = None,
                tokens: tuple[int, int] = (0, 0), error: str | None = None, detail: str = "") -> None:
        self._breaker.record(error)
        stats.last_done = time.monotonic()
        stats.requests += 1
        stats.tokens_in += tokens[0]
        stats.tokens_out += tokens[1]
        if finish == "length":
            stats.truncated += 1
        if error is not None:
            stats.errors[error] += 1
        self._store.add("requests", {
            "request_id": uuid.uuid4().hex, "key": key, "run_id": self._run_id, "stage": req.stage, "model": body["model"],
            "request": {**body, "sample_index": req.sample_index, "template": req.template},
            "response_text": text, "finish_reason": finish, "tokens_in": tokens[0],
            "tokens_out": tokens[1], "latency_s": time.monotonic() - started, "attempts": attempts,
            "error": None if error is None else f"{error}: {detail}"[:2000], "created_at": now(),
        })


def _response_format(dialect: str, schema: dict[str, Any]) -> dict[str, Any]:
    if dialect == "json_object":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        message = exc.message if isinstance(exc.message, str) else str(exc)
        return f"HTTP {exc.status_code}: {message.strip().splitlines()[0][:300] if message.strip() else ''}"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__
