"""Reading the length an instruction asks for: a `LengthSpec` with its kind, bounds and the words
that said it ("no more than 400 words", "两千五百字左右", "between 800 and 1,000 words").

Numbers are read by libraries made for it: `cn2an` for Chinese numerals (两千五百, 一万五千, 1.5万,
3千) and `text2num` for English number words (two thousand, twenty-five hundred). This module only
finds where a length is named and which way its qualifier points; regular expressions do that,
over the instruction itself, so the stored span is the user's own words.
"""

from __future__ import annotations

import re
import warnings

import cn2an
from text_to_num import text2num

from longform.lengths import LengthSpec
from longform.prompts import Prompt

# Full-width digits and signs are read as ASCII; one character for one, so spans keep their offsets.
_FULL_WIDTH = str.maketrans("０１２３４５６７８９．～－", "0123456789.~-")

_ARABIC = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_EN_NUMBER_WORD = (r"zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|"
                   r"fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|"
                   r"eighty|ninety|hundred|thousand")
_EN_WORDS = rf"(?:a\s+(?=hundred|thousand))?(?:{_EN_NUMBER_WORD})(?:(?:\s+and\s+|[\s-]+)(?:{_EN_NUMBER_WORD}))*"
_EN_NUM = rf"(?:(?:{_ARABIC})(?:\s*(?:k|thousand)\b)?|\b{_EN_WORDS}\b)"
_ZH_NUM = r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?[万千]?|[\d.零〇一二两三四五六七八九十百千万]+)"
_RANGE_SEP = r"(?:-|–|—|~|to|and|至|到)"

_EN_MENTION = re.compile(
    rf"(?P<a>{_EN_NUM})(?:\s*{_RANGE_SEP}\s*(?P<b>{_EN_NUM}))?\s*(?P<plus>\+)?\s*[- ]?words?\b", re.IGNORECASE)
_ZH_MENTION = re.compile(rf"(?P<a>{_ZH_NUM})\s*(?:{_RANGE_SEP}\s*(?P<b>{_ZH_NUM}))?\s*(?P<plus>\+)?\s*个?汉?字")
_ZH_UNIT_FIRST = re.compile(
    rf"字数\s*(?:要求)?\s*[:：]?\s*(?:为|是|在|控制在|须|需)?\s*(?P<q>不少于|不低于|至少|不超过|不多于|最多|约|大约)?\s*"
    rf"(?P<a>{_ZH_NUM})(?:\s*{_RANGE_SEP}\s*(?P<b>{_ZH_NUM}))?\s*(?:个?字)?")

_BEFORE = {
    "at_most": r"\b(?:no\s+more\s+than|not\s+more\s+than|not\s+to\s+exceed|not\s+exceeding|no\s+longer\s+than|"
               r"not\s+longer\s+than|shorter\s+than|at\s+most|up\s+to|under|below|less\s+than|fewer\s+than|"
               r"within|max(?:imum)?(?:\s+of)?)|(?:不超过|不多于|不得超过|不要超过|最多|少于|低于|不到)",
    "at_least": r"\b(?:at\s+least|no\s+less\s+than|no\s+fewer\s+than|not\s+less\s+than|not\s+fewer\s+than|"
                r"more\s+than|over|upwards\s+of|longer\s+than|min(?:imum)?(?:\s+of)?)|(?:不少于|不低于|不得少于|至少|最少|超过|多于)",
    "about": r"\b(?:about|around|roughly|approximately|approx\.?|some|circa|close\s+to|nearly|in\s+the\s+region\s+of)"
             r"|(?:~|大约|大概|约)",
    "exact": r"\b(?:exactly|precisely)|(?:正好|恰好|整整)",
    "range": r"\b(?:between|from|anywhere\s+from)|(?:介于)",   # only with two numbers
}
_AFTER = {
    "at_most": r"(?:or\s+(?:less|fewer|under|shorter)\b|max(?:imum)?\b|at\s+most\b|tops\b|以内|之内|以下|内)",
    "at_least": r"(?:or\s+(?:more|longer|above)\b|minimum\b|at\s+least\b|plus\b|以上|起)",
    "about": r"(?:or\s+so\b|左右|上下|出头)",
}
_BEFORE_RE = {kind: re.compile(rf"(?:{alts})$", re.IGNORECASE) for kind, alts in _BEFORE.items()}
_AFTER_RE = {kind: re.compile(rf"^\s*[,，]?\s*(?:{alts})", re.IGNORECASE) for kind, alts in _AFTER.items()}
# Words between a qualifier and its number: "at most *a* 500-word", "a length *of* about", "控制在".
_FILLER = re.compile(r"(?:\s+|[:：,，(（\"“']|\b(?:a|an|of|in|the|be|is|only|just|length|total|long)\b|控制在|在|写出|写)$",
                     re.IGNORECASE)
# A length per part ("300 words each", "每段300字") is not the answer's length.
_PER_PART_BEFORE = re.compile(r"每[^\d\s]{0,3}$")
_PER_PART_AFTER = re.compile(r"^\s*(?:each|per\b|apiece|a\s+(?:paragraph|section|chapter|page))", re.IGNORECASE)

_ZH_SCALES = {"万": 10000, "千": 1000, "百": 100}


def read_length(instruction: str) -> LengthSpec | None:
    """The length an instruction names, or None when it names none in words or characters
    (pages, paragraphs, "short" and "long" are not lengths the counter can check)."""
    text = instruction.translate(_FULL_WIDTH)
    found = []
    for regex, unit in ((_EN_MENTION, "words"), (_ZH_MENTION, "zh_chars"), (_ZH_UNIT_FIRST, "zh_chars")):
        for m in regex.finditer(text):
            spec = _spec(text, m, unit)
            if spec is not None:
                found.append((m.start(), -(m.end() - m.start()), spec))
    if not found:
        return None
    return min(found, key=lambda f: f[:2])[2]


def spec_for(prompt: Prompt, default_words: int) -> LengthSpec:
    """A prompt's spec: the prompts file's `target_words` or `min_words`/`max_words` first, then
    the instruction, then the configured default (kind `none`)."""
    unit = "zh_chars" if re.search(r"[\u4e00-\u9fff]", prompt.instruction) else "words"
    if prompt.target_words:
        return LengthSpec("exact", prompt.target_words, prompt.target_words, unit, None, "target_words")
    if prompt.min_words or prompt.max_words:
        kind = "range" if prompt.min_words and prompt.max_words else "at_least" if prompt.min_words else "at_most"
        return LengthSpec(kind, prompt.min_words, prompt.max_words, unit, None, "min_max_words")
    return read_length(prompt.instruction) or LengthSpec("none", default_words, default_words, unit, None, "default")


def _spec(text: str, m: re.Match[str], unit: str) -> LengthSpec | None:
    before, after = text[:m.start()], text[m.end():]
    if _PER_PART_BEFORE.search(before) or _PER_PART_AFTER.match(after):
        return None
    try:
        a = _value(m.group("a"))
        b = _value(m.group("b")) if m.group("b") else None
    except ValueError:
        return None
    if b is not None and _scale(m.group("a")) == 1 and _scale(m.group("b")) > 1 and a * _scale(m.group("b")) <= b:
        a *= _scale(m.group("b"))  # "1-2k words", "一到两万字": the scale is said once for both
    if unit == "zh_chars" and a < 20 and b is None and not re.search(r"\d", m.group("a")):
        return None  # 三字经, 五字诀: a numeral before 字 that is not a length
    start, end = m.start(), m.end()
    kind, start, end = _qualifier(text, m, start, end)
    if b is not None:
        low, high, kind = round(min(a, b)), round(max(a, b)), "range"
        end = _widen_after(text, end, "之间")
    elif kind == "range":
        kind, low, high = "exact", round(a), round(a)
    elif m.groupdict().get("plus"):
        low, high, kind = round(a), None, "at_least"
    elif kind == "at_most":
        low, high = None, round(a)
    elif kind == "at_least":
        low, high = round(a), None
    else:
        low = high = round(a)
    if (low or high or 0) <= 0:
        return None
    return LengthSpec(kind, low, high, unit, text[start:end].strip(), "instruction")


def _qualifier(text: str, m: re.Match[str], start: int, end: int) -> tuple[str, int, int]:
    """The kind a qualifier around the mention gives ("exact" without one), and the span widened to it."""
    if m.groupdict().get("q"):
        return ("at_least" if m.group("q") in ("不少于", "不低于", "至少") else
                "about" if "约" in m.group("q") else "at_most"), start, _widen_after(text, end)
    before = text[:start]
    while (stripped := _FILLER.sub("", before)) != before:
        before = stripped
    # The longest qualifier wins: "no less than" is not "less than", 不少于 is not 少于.
    matches = [(q.start(), kind) for kind, regex in _BEFORE_RE.items() if (q := regex.search(before))]
    if matches:
        q_start, kind = min(matches)
        return kind, q_start, _widen_after(text, end)
    for kind, regex in _AFTER_RE.items():
        q = regex.match(text[end:])
        if q:
            return kind, start, end + q.end()
    return "exact", start, end


def _widen_after(text: str, end: int, words: str = "以内|之内|以下|以上|左右|之间") -> int:
    """`end` moved past a trailing qualifier word, so the span keeps it."""
    q = re.match(rf"^\s*(?:{words})", text[end:])
    return end + q.end() if q else end


def _value(token: str) -> float:
    token = token.strip()
    if re.fullmatch(r"[\d.,]+", token):
        return float(token.replace(",", ""))
    scaled = re.fullmatch(rf"({_ARABIC})\s*(k|thousand)", token, re.IGNORECASE)
    if scaled:
        return float(scaled.group(1).replace(",", "")) * 1000
    if re.search(r"[a-z]", token, re.IGNORECASE):
        words = re.sub(r"^a\s+", "one ", token.lower().replace("-", " "))
        return float(text2num(" ".join(words.split()), "en"))
    if token in _ZH_SCALES:
        return float(_ZH_SCALES[token])  # 千字文, 万字长文: the scale alone means one of it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return float(cn2an.cn2an(token.replace(",", ""), "smart"))
        except (ValueError, KeyError) as e:
            raise ValueError(token) from e


def _scale(token: str) -> int:
    token = token.strip().lower()
    if token.endswith("k") or token.endswith("thousand"):
        return 1000
    return _ZH_SCALES.get(token[-1:], 1)
