"""`[export] decontaminate`: a training instruction that overlaps an evaluation prompt is not exported,
so a model is never scored on what it was trained on.

Overlap is a shared n-gram after normalisation (lower case, punctuation dropped, every number
replaced by `#`, so "a 300-word" and "a 700-word" version of one prompt are the same prompt):
- English: **10 words**. Instructions are short (10–30 words), so the 13-gram rule used on web
  corpora would miss a copied instruction. Length prompts share long templates: in longform's own
  training and evaluation prompts, two different tasks share up to 9 ("in no more than # words,
  explain how a", "write a # word report on the history of"), so n must be above that.
- Chinese: **16 characters**. A character carries less than a word and templates run long: two
  different tasks share "写一篇字数在#到#字之间的文章" (15).
An evaluation prompt shorter than n counts as overlapping where its whole normalised text occurs.

Written here rather than taken from a library: the packages that decontaminate (e.g. lm-eval's
13-gram scripts) work on corpus files and Pile-style tokenisation, not on instructions in two
languages with their lengths normalised out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from longform.prompts import load_prompt_file

EN_N = 10
ZH_N = 16

_CJK = re.compile(r"[\u4e00-\u9fff]")
_UNITS_ZH = re.compile(r"[\u4e00-\u9fff]|[a-z]+|#")
_UNITS_EN = re.compile(r"[a-z]+(?:'[a-z]+)?|#")
_NUMBER = re.compile(r"\d+(?:[,.]\d+)*")


def units(text: str) -> tuple[list[str], bool]:
    """(normalised units, whether they are Chinese characters)."""
    text = _NUMBER.sub("#", text.lower())
    chinese = len(_CJK.findall(text)) > 0.3 * max(1, len(_UNITS_ZH.findall(text)))
    return (_UNITS_ZH if chinese else _UNITS_EN).findall(text), chinese


def _grams(seq: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)}


@dataclass(frozen=True)
class Overlap:
    prompt_id: str
    source: str
    shared: str

    def reason(self) -> str:
        return f"overlaps evaluation prompt {self.prompt_id!r} in {self.source}: {self.shared[:80]!r}"


class EvalIndex:
    """The n-grams of every evaluation prompt, to test training instructions against."""

    def __init__(self, files: list[Path]):
        self.files = [str(f) for f in files]
        self._grams: dict[tuple[str, ...], tuple[str, str]] = {}
        self._short: list[tuple[list[str], str, str]] = []
        for path in files:
            for prompt in load_prompt_file(path):
                seq, chinese = units(prompt.instruction)
                n = ZH_N if chinese else EN_N
                if len(seq) < n:
                    self._short.append((seq, prompt.prompt_id, str(path)))
                for gram in _grams(seq, n):
                    self._grams.setdefault(gram, (prompt.prompt_id, str(path)))

    def overlap(self, instruction: str) -> Overlap | None:
        seq, chinese = units(instruction)
        sep = "" if chinese else " "
        for gram in _grams(seq, ZH_N if chinese else EN_N):
            if gram in self._grams:
                prompt_id, source = self._grams[gram]
                return Overlap(prompt_id, source, sep.join(gram))
        for short, prompt_id, source in self._short:
            if short and any(seq[i:i + len(short)] == short for i in range(len(seq) - len(short) + 1)):
                return Overlap(prompt_id, source, sep.join(short))
        return None
