"""Stop a build when the endpoint is clearly broken, instead of failing every prompt slowly.

A wrong model name or a misrouted URL makes every request fail; each failure is cheap, but a build
of ten thousand prompts would still record ten thousand failures and finish "successfully". The
breaker watches the last `window` final outcomes (after retries) and trips when the share of
failures reaches `max_rate`. Isolated failures, such as one prompt longer than the context window,
never trip it.
"""

from __future__ import annotations

from collections import Counter, deque


class ErrorRateBreaker:
    def __init__(self, window: int, max_rate: float):
        self._window = window
        self._max_rate = max_rate
        self._outcomes: deque[str | None] = deque(maxlen=max(window, 1))

    def record(self, error: str | None) -> None:
        self._outcomes.append(error)

    def tripped(self) -> str | None:
        """Why the endpoint looks broken, or None."""
        if self._window <= 0 or len(self._outcomes) < self._window:
            return None
        errors = [e for e in self._outcomes if e is not None]
        if len(errors) / len(self._outcomes) < self._max_rate:
            return None
        common = ", ".join(f"{name} × {n}" for name, n in Counter(errors).most_common(3))
        return f"{len(errors)} of the last {len(self._outcomes)} requests failed ({common})"
