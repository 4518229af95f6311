"""The one clock every stored timestamp and event id comes from (UTC, timezone-aware)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone


def now() -> datetime:
    return datetime.now(timezone.utc)


def timed_id(prefix: str) -> str:
    """An id for one event (a run, a training run, an evaluation): `<prefix>-YYYYMMDD-HHMMSS-<6 hex>`
    in UTC, so ids sort by when they started on every machine of a fleet."""
    return f"{prefix}-{now().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
