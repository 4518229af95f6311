"""The engine: every call to a model over HTTP goes through it (models run in-process by transformers,
for GATEAU, training and `longform eval --model`, do not).

Writers and judges hand it a `ChatRequest` and await a `Completion`. It answers from the request
cache when it can; otherwise it sends to one of its endpoints (router.py: a sample's requests stay
on one server while it is healthy, so its prefix cache is reused) under that endpoint's adaptive
concurrency limit, retrying what is transient (retry.py) — on another endpoint when there is one,
since the failure was that server's — and records every request that reached the network,
answered or failed, through the store, with the endpoint that answered.

All endpoints of one engine serve the same model: the request body (and so the cache key) does
not depend on which server answers, and a rerun finds its answers whichever server it lands on.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence
from urllib.parse import urlsplit, urlunsplit

import httpx
import openai

from longform.endpoint import Endpoint
from longform import stopping
from longform.engine.breaker import ErrorRateBreaker
from longform.engine.cache_key import request_key
from longform.engine.health import EndpointHealth
from longform.engine.retry import FINAL, RATE_LIMITED, RetryPolicy, classify, retry_after_s
from longform.engine.router import Router
from longform.engine.throttle import AdaptiveLimiter
from longform.errors import LongformError
from longform.clock import now
from longform.store import Store


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
    # Provenance, stored with the request row, and not part of the cache key: the sample this
    # request writes or judges (also its routing key), its prompt, and the section it writes.
    sample_id: str | None = None
    prompt_id: str | None = None
    section: int | None = None
    # Ask for the log-probabilities of each generated token and its `top_logprobs` alternatives
    # (judges read graded verdicts from them). Part of the body, so of the cache key.
    top_logprobs: int | None = None
    # An empty answer is an answer here, cached like any other (a continued text the model ends at
    # once); elsewhere it is an `empty_content` failure, never cached, asked again by a rerun.
    allow_empty: bool = False


# Per generated token: (token, its logprob, {alternative: logprob} for the top alternatives).
TokenLogprobs = tuple[str, float, dict[str, float]]


@dataclass(frozen=True)
class Completion:
    key: str
    text: str
    finish_reason: str | None
    tokens_in: int
    tokens_out: int
    cached: bool
    # None when not asked for, or when the server does not return them.
    logprobs: list[TokenLogprobs] | None = None

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


def public_url(url: str) -> str:
    """The base URL without credentials (user:password@), as stored and shown."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    return urlunsplit((parts.scheme, host + (f":{parts.port}" if parts.port else ""), parts.path, parts.query, ""))


class Lane:
    """One endpoint of an engine: its client, concurrency limit, health and counters."""

    def __init__(self, index: int, endpoint: Endpoint, *, concurrency: int, timeout_s: float,
                 health: EndpointHealth):
        self.index = index
        self.endpoint = endpoint
        self.name = public_url(endpoint.base_url)
        self.weight = endpoint.weight
        self.limiter = AdaptiveLimiter(concurrency)
        self.health = health
        self.stats = StageStats()
        self.failed_attempts = 0
        # The engine owns its retries, so the client's own are off. The aiohttp transport: with
        # hundreds of requests in flight, httpx's connection pool costs more CPU than the rest of
        # the engine (benchmarks/engine_efficiency.py).
        self.client = openai.AsyncOpenAI(
            base_url=endpoint.base_url, api_key=endpoint.api_key, max_retries=0,
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            http_client=openai.DefaultAioHttpClient(),
        )

    def load(self) -> int:
        return self.limiter.in_flight + self.limiter.waiting

    def available(self) -> bool:
        return self.health.available()

    def healthy(self) -> bool:
        return self.health.healthy

    def as_row(self) -> dict:
        return {**self.stats.as_row(), "failed_attempts": self.failed_attempts, "state": self.health.state,
                "reason": self.health.reason, "concurrency": self.limiter.limit}


class Engine:
    def __init__(self, endpoints: Endpoint | Sequence[Endpoint], store: Store, *, run_id: str, timeout_s: float,
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
            return None, _describe(e)

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
                    raise LongformError(f"{lane.name}: could not load LoRA adapter {name!r} ({_describe(e)}); start"
                                        " vLLM with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, with"
                                        f" {path} readable by it") from None
                except openai.APIConnectionError as e:
                    raise LongformError(f"{lane.name}: could not load LoRA adapter {name!r} ({_describe(e)})") from None

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
        if req.top_logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = req.top_logprobs
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
                              hit["tokens_out"] or 0, cached=True, logprobs=_logprobs_from_row(hit.get("logprobs")))

        started = time.monotonic()
        if stats.first_sent is None:
            stats.first_sent = started
        answer, attempts, lane = await self._send(req, key, body, stats, started)
        text, finish, tokens_in, tokens_out, logprobs = answer
        if not text.strip() and not req.allow_empty:
            # Never cached: an empty answer is not an answer, and a rerun should ask again.
            self._record(req, key, body, stats, started, attempts, lane, error="empty_content",
                         detail=f"finish_reason={finish}", tokens=(tokens_in, tokens_out))
            raise RequestFailed(key, "empty_content", f"the model returned no text (finish_reason={finish})")
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
                             detail=_describe(exc))
                raise RequestFailed(key, error, f"{lane.name}: {_describe(exc)}") from None
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
        data = json.loads(response.content)
        choices = data.get("choices") or []
        choice = choices[0] if choices else {}
        text = (choice.get("text") if "prompt" in body else (choice.get("message") or {}).get("content")) or ""
        usage = data.get("usage") or {}
        logprobs = _token_logprobs(choice.get("logprobs")) if body.get("logprobs") else None
        return (text, choice.get("finish_reason"), usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0,
                logprobs)

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
            if finish == "length":
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


def _token_logprobs(raw: Any) -> list[TokenLogprobs] | None:
    """OpenAI's chat `logprobs.content`, as (token, logprob, {alternative: logprob}); None when the
    server sent none (llama.cpp without logits_all, a server without the option)."""
    content = raw.get("content") if isinstance(raw, dict) else None
    if not content:
        return None
    out = []
    for item in content:
        top: dict[str, float] = {}
        for alt in item.get("top_logprobs") or []:
            # Two alternatives can decode to the same text; keep the likelier.
            top[alt["token"]] = max(top.get(alt["token"], float("-inf")), float(alt["logprob"]))
        out.append((item.get("token", ""), float(item.get("logprob", 0.0)), top))
    return out


def _logprobs_from_row(value: str | None) -> list[TokenLogprobs] | None:
    if value is None:
        return None
    return [(token, lp, top) for token, lp, top in json.loads(value)]


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
