"""Lengths: the counter every stored length names, LongBench-Write's S_l, and the length a prompt asks for.

A required length is a `LengthSpec`, not a number: "no more than 400 words" and "about 400 words"
are different requests, planned and scored differently (decision 7: every required length names
its kind and where it came from). Reading a spec out of an instruction is in `length_reader.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Literal

_CJK = re.compile(r"[\u4e00-\u9fff]")
_LATIN_WORD = re.compile(r"\b[a-zA-Z]+\b")


@dataclass(frozen=True)
class Counter:
    name: str
    count: Callable[[str], int]

    def __call__(self, text: str) -> int:
        return self.count(text)


def _lbw_words(text: str) -> int:
    # LongBench-Write's counter: one unit per CJK character plus one per Latin word, so an
    # English "1500 words" and a Chinese "1500字" are measured on the same scale.
    cjk = 0 if text.isascii() else len(_CJK.findall(text))
    return cjk + len(_LATIN_WORD.findall(text))


WORDS = Counter("lbw_words", _lbw_words)


def length_score(required: int, produced: int) -> float:
    """LongBench-Write S_l: 100 at the target, falling faster for short outputs than for long."""
    if required <= 0:
        raise ValueError(f"required length must be positive, got {required}")
    if produced <= 0:
        return 0.0
    if produced > required:
        return 100.0 * max(0.0, 1.0 - (produced / required - 1.0) / 3.0)
    return 100.0 * max(0.0, 1.0 - (required / produced - 1.0) / 2.0)


Kind = Literal["exact", "about", "at_most", "at_least", "range", "none"]
KINDS: tuple[str, ...] = ("exact", "about", "at_most", "at_least", "range", "none")

# Where a bound is one-sided, the plan aims inside it with this margin: a writer that lands within
# ±10% of its aim (the band below) then obeys the bound.
BOUND_MARGIN = 0.10
# How far from the aim an answer may be and still count as on target (S_l ≥ 90 on both sides).
BAND = 0.10


@dataclass(frozen=True)
class LengthSpec:
    """What a prompt asks for: `kind`, bounds `low`/`high` in `WORDS` units, the `unit` it named
    (words, or CJK characters for Chinese — one scale under the LongBench-Write counter), the
    matched text and where the spec came from (target_words | min_max_words | instruction | default).

    exact/about/none: low == high == the target. at_most: high only. at_least: low only.
    range: both. `none` means the instruction named no length; the default gives its target.
    """

    kind: Kind
    low: int | None
    high: int | None
    unit: str = "words"
    span: str | None = None
    source: str = "instruction"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown length kind {self.kind!r}")
        if self.low is None and self.high is None:
            raise ValueError("a length spec needs a bound")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"length range {self.low}..{self.high} is empty")

    @property
    def aim(self) -> int:
        """The length a writer plans for: the target, a bound's inside with a margin, a range's middle."""
        if self.kind == "at_most":
            return max(1, round(self.high * (1 - BOUND_MARGIN)))
        if self.kind == "at_least":
            return round(self.low * (1 + BOUND_MARGIN))
        if self.kind == "range":
            return round((self.low + self.high) / 2)
        return self.low

    @property
    def band(self) -> tuple[int, int]:
        """The lengths a writer stops in: near the aim, and never across a bound."""
        low, high = round(self.aim * (1 - BAND)), round(self.aim * (1 + BAND))
        if self.kind == "range":
            low, high = max(low, self.low), min(high, self.high)
        elif self.kind == "at_most":
            high = min(high, self.high)
        elif self.kind == "at_least":
            low = max(low, self.low)
        return low, high

    def bound_ok(self, produced: int) -> bool | None:
        """Whether a bound or range is obeyed; None for kinds without one."""
        if self.kind == "at_most":
            return produced <= self.high
        if self.kind == "at_least":
            return produced >= self.low
        if self.kind == "range":
            return self.low <= produced <= self.high
        return None

    def score(self, produced: int) -> float:
        """The kind-aware length score: S_l against the target (exact, about, none) or the aim
        (bounds, with `bound_ok` beside it); for a range, 100 inside and S_l to the nearer end."""
        if self.kind == "range":
            if self.low <= produced <= self.high:
                return 100.0
            return length_score(self.low if produced < self.low else self.high, produced)
        return length_score(self.aim, produced)

    def describe(self) -> str:
        unit = "字" if self.unit == "zh_chars" else " words"
        return {"exact": f"exactly {self.low}{unit}", "about": f"about {self.low}{unit}",
                "none": f"{self.low}{unit} (default)", "at_most": f"at most {self.high}{unit}",
                "at_least": f"at least {self.low}{unit}",
                "range": f"{self.low}–{self.high}{unit}"}[self.kind]

    def columns(self) -> dict:
        """The stored spec of a sample: `required_words` is the aim, then what was asked."""
        return {"required_words": self.aim, "required_source": self.source, "length_kind": self.kind, "length_low": self.low, "length_high": self.high,
                "length_unit": self.unit, "length_span": self.span}


def asked(sample: dict) -> str:
    """What a stored sample was asked for, in words ("at most 400 words", "1000–1200字")."""
    if sample.get("length_kind") is None:  # written before length specs (schema v9)
        return f"{sample['required_words']} words"
    return LengthSpec(sample["length_kind"], sample["length_low"], sample["length_high"],
                      sample["length_unit"] or "words").describe()


def measure(text: str, spec: LengthSpec) -> dict[str, object]:
    """The stored length columns of one output: its length, the counter's name, the kind-aware
    score and, for bounds, whether it is obeyed."""
    produced = WORDS(text)
    return {"words": produced, "length_counter": WORDS.name, "length_score": spec.score(produced),
            "bound_ok": spec.bound_ok(produced)}
