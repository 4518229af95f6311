"""`[export] relabel_length`: the instruction's length phrase rewritten to the answer's real length.

A model learns to write to the length it is asked for from examples whose asked length is true.
AgentWrite's answers miss their targets (by 5% on a good day, by half on a 135M model), and
Self-Lengthen rewrites each prompt's length requirement to its answer's length before its final
SFT for that reason; ModelScope's filtering of LongWriter-6k to the samples whose stated length
matched gained more than the data it removed. Here the phrase the length reader matched is
rewritten in place, in the instruction's language and unit, and a phrase is added where the
instruction named none. A bound the answer kept ("no more than 400 words" with 380) is true as it
stands and stays.
"""

from __future__ import annotations

import re

from longform.length_reader import read_length

_ARABIC = re.compile(r"\d{1,3}(?:,\d{3})+|\d+")


def rounded(n: int) -> int:
    """A length as a person would ask for it: to 10 below 200, 50 below 2,000, 100 below 10,000."""
    step = 10 if n < 200 else 50 if n < 2000 else 100 if n < 10000 else 500
    return max(step, int(round(n / step)) * step)


def relabel(instruction: str, *, kind: str, low: int | None, high: int | None, unit: str, written: int) -> str | None:
    """The instruction asking for `written` (rounded), or None when its length phrase is already true."""
    n = rounded(written)
    chinese = unit == "zh_chars"
    if kind in ("at_most", "at_least", "range"):
        if (low is None or written >= low) and (high is None or written <= high):
            return None   # the bound holds: the label is true
    elif kind in ("exact", "about") and n == low:
        return None
    spec = read_length(instruction)
    if kind == "none" or spec is None or not spec.span or spec.span not in instruction:
        # No phrase to rewrite (the length came from the prompts file, or none was named): add one.
        return f"{instruction}（约{n}字）" if chinese else f"{instruction.rstrip()} Answer in about {n} words."
    if spec.kind in ("exact", "about") and len(_ARABIC.findall(spec.span)) == 1:
        new_span = _ARABIC.sub(str(n), spec.span)   # the user's own words, with the number changed
    elif chinese:
        new_span = f"{n}字左右"
    elif spec.kind == "exact" and re.search(r"[- ]word$", spec.span):   # "a two thousand word essay"
        new_span = f"{n}-word"
    else:
        new_span = f"about {n} words"
    at = instruction.index(spec.span)
    before = _article(instruction[:at], new_span)
    return before + new_span + instruction[at + len(spec.span):]


def _article(before: str, new_span: str) -> str:
    """"a 500-word" / "an 800-word": the article before a rewritten number agrees with it."""
    m = re.search(r"\b(a|an|A|An) $", before)
    if not m or not new_span[:1].isdigit():
        return before
    digits = _ARABIC.match(new_span).group(0).replace(",", "")
    vowel = digits.startswith("8") or (len(digits) in (2, 5) and digits[:2] in ("11", "18"))
    article = ("an" if vowel else "a")
    article = article.capitalize() if m.group(1)[0].isupper() else article
    return before[:m.start(1)] + article + " "
