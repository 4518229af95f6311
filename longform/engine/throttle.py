"""Per-endpoint concurrency with additive increase, multiplicative decrease, and an order for who goes next.

The configured concurrency is a ceiling. A 429 halves the number of requests allowed in flight; a
run of successes as long as the current limit adds one back, so a server that recovers gets its
full load again without a restart.

When every slot is taken, a freed slot goes to the waiting request with the lowest priority value
(writers pass minus the work left in their sample, so the longest chain goes first: the list
scheduling rule that keeps a tail of long samples from running on an otherwise idle server), then
to whoever waited longest. A release wakes exactly one waiter.
"""

from __future__ import annotations

import asyncio
import heapq
from itertools import count


class AdaptiveLimiter:
    def __init__(self, ceiling: int):
        self.ceiling = ceiling
        self.limit = ceiling
        self.in_flight = 0
        self.lowest = ceiling
        self._successes = 0
        self._waiting: list[tuple[float, int, asyncio.Future]] = []
        self._order = count()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def acquire(self, priority: float = 0.0) -> None:
        if self.in_flight < self.limit and not self._waiting:
            self.in_flight += 1
            return
        granted = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._order), granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release()  # handed a slot in the same instant it was cancelled
            raise

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiting and self.in_flight < self.limit:
            _, _, granted = heapq.heappop(self._waiting)
            if not granted.done():
                self.in_flight += 1
                granted.set_result(None)

    def on_success(self) -> None:
        self._successes += 1
        if self.limit < self.ceiling and self._successes >= self.limit:
            self.limit += 1
            self._successes = 0
            self._wake()

    def on_rate_limited(self) -> None:
        self.limit = max(1, self.limit // 2)
        self.lowest = min(self.lowest, self.limit)
        self._successes = 0
