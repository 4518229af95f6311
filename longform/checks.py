"""A check's verdict: what filters return and Self-Lengthen's rounds record."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    filter: str
    passed: bool
    reason: str | None = None
