"""Filters: each takes one thing and returns a `Check`, pass or fail with the reason.

A failed check is stored beside the sample (or prompt) it judged; nothing is dropped silently.
The last three are Self-Lengthen's filters (Quan et al., 2024); the others are longform's.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from math import ceil

from longform.checks import Check
from longform.text import paragraphs
from rapidfuzz import fuzz
from rapidfuzz.process import cdist


def _ok(name: str) -> Check:
    return Check(name, True)


# --- samples -------------------------------------------------------------------------------------

def min_length_score(score: float, floor: float) -> Check:
    if score >= floor:
        return _ok("min_length_score")
    return Check("min_length_score", False, f"S_l {score:.1f} < {floor:g}")


def length_bound(bound_ok: bool | None, asked: str) -> Check:
    """A bound or range the instruction set ("no more than 400 words", "不少于3000字"), broken."""
    if bound_ok is not False:
        return _ok("length_bound")
    return Check("length_bound", False, f"asked for {asked}")


_PLAN_LABEL = re.compile(
    r"^\s*(?:[#*>\s]*)(?:(?:paragraph|section|part|step)\s+\d+\s*[:.\-]|(?:main point|word count)\s*[:：]"
    r"|第[一二三四五六七八九十\d]+段\s*[:：]|(?:段落|字数)\s*[:：\d])", re.IGNORECASE | re.MULTILINE)


def plan_labels(text: str) -> Check:
    """AgentWrite's plan format ("Paragraph 2 - Main Point: …") leaking into the answer."""
    match = _PLAN_LABEL.search(text)
    if not match:
        return _ok("plan_labels")
    # The label and the rest of its line; the match may begin with the line break before it.
    line = (text[match.start():].strip().splitlines() or [match.group(0)])[0].strip()
    return Check("plan_labels", False, f"plan label left in the text: {line[:80]!r}")


def repeated_paragraphs(text: str, threshold: float, min_words: int = 20) -> Check:
    """Two paragraphs of one sample that are near-copies (rapidfuzz ratio ≥ threshold)."""
    paras = [p for p in paragraphs(text) if len(_units(p)) >= min_words]
    if len(paras) < 2:
        return _ok("repeated_paragraphs")
    scores = cdist(paras, paras, scorer=fuzz.ratio, score_cutoff=threshold, workers=1)
    for i in range(len(paras)):
        for j in range(i + 1, len(paras)):
            if scores[i, j]:
                return Check("repeated_paragraphs", False,
                             f"paragraphs {i + 1} and {j + 1} are {scores[i, j]:.0f}% similar")
    return _ok("repeated_paragraphs")


_END_PUNCTUATION = tuple(".!?。！？…\"'”’」』)）")


def ends_with_punctuation(text: str) -> Check:
    """A text cut off mid-sentence (by max_tokens or a broken continuation)."""
    stripped = text.rstrip().rstrip("*_` ")
    if stripped.endswith(_END_PUNCTUATION):
        return _ok("ends_with_punctuation")
    return Check("ends_with_punctuation", False, f"ends mid-sentence: {stripped[-40:]!r}")


_CJK = re.compile(r"[\u4e00-\u9fff]")
_UNIT = re.compile(r"[\u4e00-\u9fff]|[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?")


def _is_chinese(text: str) -> bool:
    letters = len(_UNIT.findall(text))
    return letters > 0 and len(_CJK.findall(text)) / letters > 0.3


def _units(text: str) -> list[str]:
    # Chinese: one unit per CJK character or run of Latin letters; English: one per word.
    if _is_chinese(text):
        return _UNIT.findall(text)
    return [w.lower() for w in _WORD.findall(text)]


def repeated_ngram(text: str, n_chinese: int = 13, n_english: int = 10) -> Check:
    """Any n-gram that occurs twice: the loop a small model falls into when it runs out of ideas."""
    units = _units(text)
    n = n_chinese if _is_chinese(text) else n_english
    seen: set[tuple[str, ...]] = set()
    for i in range(len(units) - n + 1):
        gram = tuple(units[i:i + n])
        if gram in seen:
            sep = "" if _is_chinese(text) else " "
            return Check("repeated_ngram", False, f"repeated {n}-gram: {sep.join(gram)[:80]!r}")
        seen.add(gram)
    return _ok("repeated_ngram")


_META = re.compile(r"revised|revision|response|version|paragraph|修改|修订|回复|回答|版本|段落", re.IGNORECASE)


def meta_words(text: str) -> Check:
    """Talk about the text ("Here is the revised version…") in its first 2 or last 3 lines."""
    lines = [line for line in text.splitlines() if line.strip()]
    edges = lines[:2] + lines[2:][-3:]
    for line in edges:
        match = _META.search(line)
        if match:
            return Check("meta_words", False, f"meta word {match.group(0)!r} in {line.strip()[:80]!r}")
    return _ok("meta_words")


# --- prompts -------------------------------------------------------------------------------------

def near_duplicates(texts: list[str], threshold: float, *, jaccard_floor: float = 0.6) -> dict[int, tuple[int, float]]:
    """For each text that nearly repeats an earlier one: index → (index of the earlier, ratio).

    Scoring all pairs is quadratic (5·10⁹ ratios at 100k prompts), so candidates come first from
    prefix filtering (Bayardo et al., 2007) over each text's set of adjacent-unit pairs (word or CJK
    character bigrams): order every set rarest first; two sets with Jaccard ≥ j must share one of the
    first ⌈(1 − j)·|set|⌉ + 1 of either. Bigrams are rare, so candidate lists stay short. Only
    candidates are scored with rapidfuzz's ratio. An edit of one or two words in a 30-word prompt
    keeps the bigram Jaccard above 0.6, so a floor of 0.6 loses almost no near-copy above a ratio of
    90 (benchmarks/near_duplicates.py measures the recall against exact all-pairs scoring).
    """
    units = [_units(t) for t in texts]
    keys = [sorted(set(zip(u, u[1:])) if len(u) >= 4 else {(w,) for w in u}) for u in units]
    frequency = Counter(k for ks in keys for k in ks)
    index: dict[tuple, list[int]] = defaultdict(list)
    normalized = [" ".join(u) for u in units]
    found: dict[int, tuple[int, float]] = {}
    exact: dict[str, int] = {}
    for i, ks in enumerate(keys):
        if normalized[i] in exact:
            found[i] = (exact[normalized[i]], 100.0)
            continue
        exact[normalized[i]] = i
        ordered = sorted(ks, key=lambda k: (frequency[k], k))
        prefix = ordered[:ceil((1 - jaccard_floor) * len(ordered)) + 1]
        candidates = {j for k in prefix for j in index[k]}
        best = None
        for j in sorted(candidates):
            score = fuzz.ratio(normalized[i], normalized[j], score_cutoff=threshold)
            if score and (best is None or score > best[1]):
                best = (j, score)
        if best:
            found[i] = best
        else:
            # Only texts kept as originals are indexed: a duplicate's duplicates match its original.
            for k in prefix:
                index[k].append(i)
    return found


# Self-Lengthen's round filters (Quan et al., 2024), handed to the writer by the flow.
SELF_LENGTHEN_FILTERS = (ends_with_punctuation, repeated_ngram, meta_words)
