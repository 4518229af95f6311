"""The one clock every stored timestamp comes from (UTC, timezone-aware)."""

from __future__ import annotations

from datetime import datetime, timezone


def now() -> datetime:
    return datetime.now(timezone.utc)
