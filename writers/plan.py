"""AgentWrite plans: parsing what the model answered and turning it into per-section budgets.

The parser is lenient by design (a small model's plan is rarely clean): a JSON object, the
complete items of a truncated JSON answer, or LongWriter's text form
`Paragraph N - Main Point: ... - Word Count: N words`. It returns None rather than raising, so an
unparsable plan becomes a failure row with the raw answer, never text in a sample.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

PLAN_SCHEMA = {
    "type": "object",
    "properties": {
        "paragraphs": {
            "type": "array",
            "minItems": 1,
            "maxItems": 50,
            "items": {
                "type": "object",
                "properties": {
                    "main_point": {"type": "string"},
                    "word_count": {"type": "integer"},
                },
                "required": ["main_point", "word_count"],
            },
        }
    },
    "required": ["paragraphs"],
}


@dataclass(frozen=True)
class Step:
    main_point: str
    words: int


_JSON_ITEM = re.compile(
    r'"main_point"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"word_count"\s*:\s*"?(\d+)', re.DOTALL
)
_TEXT_LINE = re.compile(
    r"(?:paragraph|段落|第)\s*(\d+)\s*(?:段)?\s*[-–—:：.]*\s*"
    r"(?:main\s*point|主要内容|要点)\s*[:：]\s*(.+?)\s*[-–—]+\s*"
    r"(?:word\s*count|字数)\s*[:：]\s*(\d[\d,]*)",
    re.IGNORECASE,
)


def parse_plan(answer: str) -> tuple[list[Step], str] | None:
    """(steps, "json" | "text"), or None if no step can be read."""
    steps = _from_json(answer)
    if steps:
        return steps, "json"
    steps = [Step(_clean(_unescape(m.group(1))), int(m.group(2))) for m in _JSON_ITEM.finditer(answer)]
    steps = [s for s in steps if s.main_point]
    if steps:
        return steps, "json"
    steps = [Step(_clean(m.group(2)), int(m.group(3).replace(",", "")))
             for m in _TEXT_LINE.finditer(answer)]
    steps = [s for s in steps if s.main_point]
    return (steps, "text") if steps else None


def _from_json(answer: str) -> list[Step]:
    try:
        data = json.loads(answer, strict=False)  # small models put raw newlines inside strings
    except json.JSONDecodeError:
        return []
    items = data.get("paragraphs") if isinstance(data, dict) else data
    if not isinstance(items, list):
        return []
    steps = []
    for item in items:
        if not isinstance(item, dict):
            continue
        point = item.get("main_point")
        count = item.get("word_count")
        if isinstance(point, str) and point.strip():
            steps.append(Step(_clean(point), count if isinstance(count, int) and count > 0 else 0))
    return steps


def _unescape(fragment: str) -> str:
    try:
        return json.loads(f'"{fragment}"')
    except json.JSONDecodeError:
        return fragment


def _clean(point: str) -> str:
    return " ".join(point.split()).strip(" -[]")


def allocate(steps: list[Step], total: int, *, max_steps: int, max_section_words: int) -> list[Step]:
    """Budgets that add up to `total` exactly, in proportion to what the plan asked for.

    Steps with no usable count get the mean of the others. A step whose budget exceeds
    `max_section_words` (a small model often plans one paragraph for a whole essay) is split into
    parts, as long as the plan stays within `max_steps`.
    """
    steps = steps[:max_steps]
    known = [s.words for s in steps if s.words > 0]
    fill = sum(known) / len(known) if known else 1.0
    weights = [s.words if s.words > 0 else fill for s in steps]
    shares = [total * w / sum(weights) for w in weights]

    parts = [1] * len(steps)
    for i in sorted(range(len(steps)), key=lambda i: -shares[i]):
        wanted = math.ceil(shares[i] / max_section_words)
        room = max_steps - sum(parts)
        parts[i] += max(0, min(wanted - 1, room))

    expanded: list[tuple[str, float]] = []
    for step, share, n in zip(steps, shares, parts):
        for k in range(n):
            point = step.main_point if n == 1 else f"{step.main_point} (part {k + 1} of {n})"
            expanded.append((point, share / n))
    return [Step(point, words) for (point, _), words in zip(expanded, _round_to_total([s for _, s in expanded], total))]


def _round_to_total(values: list[float], total: int) -> list[int]:
    """Largest-remainder rounding: integers that keep the proportions and sum to `total`."""
    floors = [math.floor(v) for v in values]
    order = sorted(range(len(values)), key=lambda i: floors[i] - values[i])
    for i in order[: total - sum(floors)]:
        floors[i] += 1
    return floors


def render_plan(steps: list[Step]) -> str:
    return "\n".join(f"Paragraph {i} - Main Point: {s.main_point} - Word Count: {s.words} words"
                     for i, s in enumerate(steps, start=1))
