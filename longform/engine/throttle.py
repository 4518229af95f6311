"""Per-endpoint concurrency with additive increase, multiplicative decrease.

The configured concurrency is a ceiling. A 429 halves the number of requests allowed in flight; a
run of successes as long as the current limit adds one back, so a server that recovers gets its
full load again without a restart.
"""

from __future__ import annotations

import asyncio


class AdaptiveLimiter:
    def __init__(self, ceiling: int):
        self.ceiling = ceiling
        self.limit = ceiling
        self.in_flight = 0
        self.lowest = ceiling
        self._successes = 0
        self._cond = asyncio.Condition()

    async def acquire(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1

    async def release(self) -> None:
        async with self._cond:
            self.in_flight -= 1
            self._cond.notify_all()

    def on_success(self) -> None:
        self._successes += 1
        if self.limit < self.ceiling and self._successes >= self.limit:
            self.limit += 1
            self._successes = 0

    def on_rate_limited(self) -> None:
        self.limit = max(1, self.limit // 2)
        self.lowest = min(self.lowest, self.limit)
        self._successes = 0
