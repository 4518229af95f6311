"""Ruler's length metrics (Li et al., 2024, "Ruler: A Model-Agnostic Method to Control Generated
Length"): Precise Match (PM) and Flexible Match (FM), and the Meta Length Token (MLT) of a text.

PM/FM are the share of outputs whose word count falls in the target's range, lower bound exclusive.
Ruler's targets stop at ">800"; longform's targets go to tens of thousands of words, so it also
reports the same two rates with ±10% (PM) and ±25% (FM) bands around any target. The bands are
longform's extension, not Ruler's, and are labelled `band` wherever they appear.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    label: str
    level: int
    pm: tuple[float, float]
    fm: tuple[float, float]
    mlt: tuple[float, float]


INF = math.inf
TARGETS = (
    Target("10", 0, (0, 20), (0, 20), (5, 15)),
    Target("30", 0, (20, 40), (20, 40), (25, 35)),
    Target("50", 0, (40, 60), (40, 60), (45, 55)),
    Target("80", 0, (70, 90), (60, 100), (75, 85)),
    Target("150", 1, (130, 170), (100, 200), (135, 155)),
    Target("300", 1, (280, 320), (200, 400), (295, 305)),
    Target("500", 1, (450, 550), (400, 600), (495, 505)),
    Target("700", 2, (630, 770), (600, 800), (695, 705)),
    Target(">800", 2, (800, INF), (800, INF), (800, INF)),
)
_BY_LABEL = {t.label: t for t in TARGETS}


def _inside(words: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] < words <= bounds[1]


def ruler_target(required_words: int) -> Target | None:
    """The Ruler target a required length is, if it is one of Ruler's (">800" for anything above)."""
    if required_words > 800:
        return _BY_LABEL[">800"]
    return _BY_LABEL.get(str(required_words))


def meta_length_token(words: int) -> str | None:
    """The MLT whose training bucket holds `words` ("[MLT:300]"), or None between buckets."""
    for t in TARGETS:
        if _inside(words, t.mlt):
            return f"[MLT:{t.label}]"
    return None


def band_match(words: int, required: int, tolerance: float) -> bool:
    return abs(words - required) <= tolerance * required


@dataclass
class Rates:
    n: int = 0
    pm: int = 0
    fm: int = 0

    def add(self, pm: bool, fm: bool) -> None:
        self.n += 1
        self.pm += pm
        self.fm += fm

    def as_dict(self) -> dict:
        return {"n": self.n, "PM": self.pm / self.n if self.n else None, "FM": self.fm / self.n if self.n else None}


def ruler_metrics(pairs: list[tuple[int, int]]) -> dict:
    """PM/FM per Ruler target, per level and overall, and the banded rates, from (required, produced)."""
    per_target: dict[str, Rates] = defaultdict(Rates)
    per_level: dict[int, Rates] = defaultdict(Rates)
    overall, band = Rates(), Rates()
    for required, produced in pairs:
        band.add(band_match(produced, required, 0.10), band_match(produced, required, 0.25))
        target = ruler_target(required)
        if target is None:
            continue
        pm, fm = _inside(produced, target.pm), _inside(produced, target.fm)
        for rates in (per_target[target.label], per_level[target.level], overall):
            rates.add(pm, fm)
    return {
        "targets": {t.label: per_target[t.label].as_dict() for t in TARGETS if t.label in per_target},
        "levels": {level: per_level[level].as_dict() for level in sorted(per_level)},
        "overall": overall.as_dict(),
        "band": band.as_dict(),
    }
