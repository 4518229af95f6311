"""Whether one endpoint should get new work, from the outcomes of its own HTTP attempts.

Only failures that say something about the server count: connection errors, timeouts and 5xx. A
400 (a prompt too long) or a 429 (load, handled by the limiter) says nothing about its health.

An endpoint goes down after `consecutive` transient failures in a row (a killed server refuses
every connection, so waiting for a whole window would send a window's worth of requests to it), or
when a full window of recent attempts failed at `max_rate` or more (a server that fails half its
requests). While down it gets no new work for a cool-down; then one request at a time probes it:
a success brings it back, a failure doubles the cool-down (up to `max_cooldown_s`).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable

UP, DOWN, PROBING = "up", "down", "probing"


class EndpointHealth:
    def __init__(self, *, window: int = 20, max_rate: float = 0.5, consecutive: int = 3,
                 cooldown_s: float = 10.0, max_cooldown_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic):
        self._outcomes: deque[bool] = deque(maxlen=max(window, 1))
        self._window = window
        self._max_rate = max_rate
        self._consecutive_limit = consecutive
        self._base_cooldown = cooldown_s
        self._max_cooldown = max_cooldown_s
        self._clock = clock
        self.state = UP
        self.reason = ""
        self.consecutive = 0
        self.cooldown_s = cooldown_s
        self._retry_at = 0.0
        self.downs = 0

    @property
    def healthy(self) -> bool:
        return self.state == UP

    def available(self) -> bool:
        """Up, or down with its cool-down over and no probe in flight."""
        return self.state == UP or (self.state == DOWN and self._clock() >= self._retry_at)

    def sending(self) -> None:
        """An attempt is about to go out; on a down endpoint past its cool-down it is the probe."""
        if self.state == DOWN and self._clock() >= self._retry_at:
            self.state = PROBING

    def succeeded(self) -> None:
        self.consecutive = 0
        self._outcomes.append(True)
        if self.state != UP:
            self.state, self.reason = UP, ""
            self.cooldown_s = self._base_cooldown
            self._outcomes.clear()

    def failed(self, error: str) -> None:
        self.consecutive += 1
        self._outcomes.append(False)
        if self.state == PROBING:
            self.cooldown_s = min(self._max_cooldown, self.cooldown_s * 2)
            self.down(f"probe failed ({error})")
        elif self.state == UP:
            if self.consecutive >= self._consecutive_limit:
                self.down(f"{self.consecutive} failures in a row (last: {error})")
            elif self._window and len(self._outcomes) == self._window:
                failures = self._outcomes.count(False)
                if failures / self._window >= self._max_rate:
                    self.down(f"{failures} of the last {self._window} attempts failed (last: {error})")

    def down(self, reason: str) -> None:
        """No new work until the cool-down is over, then one probe at a time."""
        self.state, self.reason = DOWN, reason
        self._retry_at = self._clock() + self.cooldown_s
        self.downs += 1
