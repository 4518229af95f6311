"""Asking a running build to stop sending, without losing what is already in flight.

A signal handler cannot reach into the build, so the request is a process-wide flag that the
engine reads before every send: once set, cache hits are still answered and answers in flight
are still recorded, but nothing new goes out, and every sample ends at its next request.
"""

from __future__ import annotations

from longform.errors import LongformError


class Interrupted(LongformError):
    """The user asked the build to stop."""


_reason: LongformError | None = None


def request_stop(reason: LongformError) -> None:
    global _reason
    if _reason is None:
        _reason = reason


def stop_reason() -> LongformError | None:
    return _reason


def reset() -> None:
    global _reason
    _reason = None
