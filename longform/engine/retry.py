"""Which failures are worth sending again, and how long to wait first.

Connection errors, timeouts and 5xx are transient: retried with exponential backoff and full
jitter, so many clients that failed together do not return together. 429 is not a failure of the
request but a signal about load: it is retried after the server's Retry-After, on a separate
budget, and it is reported to the limiter (throttle.py) so the whole engine sends less. Any other
4xx (bad request, unknown model, context too long) is final: sending it again cannot help.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import openai

from longform.clock import now
from longform.reasons import FailureReason

TRANSIENT = "transient"
RATE_LIMITED = "rate_limited"
FINAL = "final"


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    max_rate_limit_waits: int = 10
    base_s: float = 0.5
    max_s: float = 30.0

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before attempt number `attempt + 1` (attempt counts from 1)."""
        return random.uniform(0, min(self.max_s, self.base_s * 2 ** (attempt - 1)))


def classify(exc: BaseException) -> tuple[str, str]:
    """(kind, error class name stored with the failure)."""
    if isinstance(exc, openai.APITimeoutError):
        return TRANSIENT, FailureReason.TIMEOUT
    if isinstance(exc, openai.APIConnectionError):
        return TRANSIENT, FailureReason.CONNECTION
    if isinstance(exc, openai.RateLimitError):
        return RATE_LIMITED, FailureReason.http(429)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        # 408 (request timeout) says nothing about the request itself, like a 5xx.
        return (TRANSIENT if status >= 500 or status == 408 else FINAL), FailureReason.http(status)
    return FINAL, type(exc).__name__


def retry_after_s(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    if response is None:
        return None
    headers = response.headers
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - now()).total_seconds())
