"""One endpoint of an engine: its client, concurrency limit, health and counters."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import httpx
import openai

from longform.engine.endpoint import Endpoint
from longform.engine.health import EndpointHealth
from longform.engine.messages import StageStats
from longform.engine.throttle import AdaptiveLimiter


def public_url(url: str) -> str:
    """The base URL without credentials (user:password@), as stored and shown."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    return urlunsplit((parts.scheme, host + (f":{parts.port}" if parts.port else ""), parts.path, parts.query, ""))


class Lane:

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
