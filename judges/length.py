"""Length measurement and LongBench-Write's length score S_l.

Every stored length names its counter (decision 6), so the counter is a named object rather than
a bare function: `WORDS.name` goes into the database next to every number it produced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

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


# --- required length from the instruction -------------------------------------------------------

_CN_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7,
              "八": 8, "九": 9, "十": 10, "半": 0.5}
_NUM = r"\d+(?:[.,]\d+)*"
_CN_NUM = r"[零一二两三四五六七八九十半]+"

# Ordered: the first pattern that matches wins, so ranges come before single numbers.
_PATTERNS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], float]]] = []


def _pattern(regex: str):
    def register(fn: Callable[[re.Match[str]], float]):
        _PATTERNS.append((re.compile(regex, re.IGNORECASE), fn))
        return fn
    return register


def _number(text: str) -> float:
    text = text.strip()
    if re.fullmatch(_NUM, text):
        # "1,500" is a thousands separator, "1.5" a decimal.
        return float(text.replace(",", "")) if "," in text else float(text)
    return _chinese_number(text)


def _chinese_number(text: str) -> float:
    if text == "十":
        return 10
    if "十" in text:
        tens, _, ones = text.partition("十")
        return (_CN_DIGITS.get(tens, 1) if tens else 1) * 10 + (_CN_DIGITS.get(ones, 0) if ones else 0)
    if len(text) == 1:
        return _CN_DIGITS[text]
    raise ValueError(text)


@_pattern(rf"({_NUM})\s*(?:-|–|to|and)\s*({_NUM})\s*(k\s*)?[- ]?words?\b")
def _word_range(m: re.Match[str]) -> float:
    scale = 1000 if m.group(3) else 1
    return (_number(m.group(1)) + _number(m.group(2))) / 2 * scale


@_pattern(rf"({_NUM})\s*k\s*[- ]?words?\b")
def _kilo_words(m: re.Match[str]) -> float:
    return _number(m.group(1)) * 1000


@_pattern(rf"({_NUM})[- ]?words?\b")
def _words(m: re.Match[str]) -> float:
    return _number(m.group(1))


@_pattern(rf"({_NUM}|{_CN_NUM})?\s*(万|千|百)\s*字")
def _cn_scaled(m: re.Match[str]) -> float:
    # "千字文" / "万字长文" with no number mean one thousand / ten thousand.
    scale = {"万": 10000, "千": 1000, "百": 100}[m.group(2)]
    return (_number(m.group(1)) if m.group(1) else 1) * scale


@_pattern(rf"({_NUM})\s*(?:-|~|～|至|到)\s*({_NUM})\s*字")
def _cn_range(m: re.Match[str]) -> float:
    return (_number(m.group(1)) + _number(m.group(2))) / 2


@_pattern(rf"({_NUM})\s*(?:个)?字")
def _cn_chars(m: re.Match[str]) -> float:
    return _number(m.group(1))


def required_words(instruction: str) -> int | None:
    """The length an instruction asks for, in the `WORDS` counter's units, or None if it names none."""
    for regex, value in _PATTERNS:
        m = regex.search(instruction)
        if m:
            try:
                words = round(value(m))
            except (ValueError, KeyError):
                continue
            if words > 0:
                return words
    return None


def measure(text: str, required: int) -> dict[str, object]:
    """The stored length columns of one output: its length, the counter's name and S_l."""
    produced = WORDS(text)
    return {"words": produced, "length_counter": WORDS.name, "length_score": length_score(required, produced)}
