"""The rubric judge: LongBench-Write's six quality dimensions, each rated 1-5.

S_q = mean over dimensions of (rating - 1) x 25, so 0-100 like the length score S_l. Ratings are
asked for as JSON (`response_format`); a lenient parser reads prose answers from servers without
structured output. With `[judges] verdicts = "logprobs"`, each rating is also scored in expectation
under its token's probabilities over "1" … "5" (G-Eval), stored as `expected_quality` beside the
argmax `quality`: a graded score where a small judge gives every answer the same integers. Whatever comes back, raw output and parse status are stored: an unparsable
verdict is a row with no score, never a guessed one.
"""

from __future__ import annotations

import re
from pathlib import Path

from judges.material import PROMPT_OVERHEAD, Candidate, ask_judge, clip, failed
from longform.text import json_object, quote
from judges.verdicts import expected_rating, token_at
from longform import templates
from longform.config import JudgesConfig
from longform.engine import Engine, RequestFailed
from longform.clock import now
from longform.ids import content_hash

DIMENSIONS = ("relevance", "accuracy", "coherence", "clarity", "breadth_and_depth", "reading_experience")
SCHEMA = {
    "type": "object",
    # An enum rather than minimum/maximum: llama.cpp's grammar converter ignores numeric bounds.
    "properties": {d: {"type": "integer", "enum": [1, 2, 3, 4, 5]} for d in DIMENSIONS},
    "required": list(DIMENSIONS),
}
_TEMPLATES = Path(__file__).parent / "templates"

def parse(text: str) -> tuple[dict[str, int] | None, str]:
    """(ratings, status): status is `json`, `lenient` or `unparsable`."""
    ratings = _from_json(text)
    status = "json"
    if ratings is None:
        ratings, status = _from_prose(text), "lenient"
    if ratings is None or any(not 1 <= ratings.get(d, 0) <= 5 for d in DIMENSIONS):
        return None, "unparsable"
    return {d: ratings[d] for d in DIMENSIONS}, status


def quality(ratings: dict[str, int]) -> float:
    return sum((ratings[d] - 1) * 25 for d in DIMENSIONS) / len(DIMENSIONS)


def expected_ratings(text: str, logprobs) -> tuple[dict[str, float] | None, str]:
    """Each dimension's expected rating, read at the token of its value; (None, why not) otherwise."""
    if not logprobs:
        return None, "argmax: the server returned no logprobs"
    out = {}
    for d in DIMENSIONS:
        match = re.search(rf'"{d}"\s*:\s*(\d)', text)
        token = token_at(logprobs, match.start(1)) if match else None
        value = expected_rating(token[2] or {token[0]: token[1]}) if token else None
        if value is None:
            return None, f"argmax: no rating among the top alternatives of {d!r}"
        out[d] = value
    return out, "logprobs"


def _from_json(text: str) -> dict[str, int] | None:
    value = json_object(text)
    if value is None:
        return None
    out = {}
    for key, rating in value.items():
        name = _dimension(key)
        if name and isinstance(rating, (int, float)) and float(rating).is_integer():
            out[name] = int(rating)
    return out if set(out) == set(DIMENSIONS) else None


def _from_prose(text: str) -> dict[str, int] | None:
    out = {}
    for match in re.finditer(r"([A-Za-z][A-Za-z _&-]{2,30}?)\s*[:=\-]\s*\**\s*(\d)(?:\s*/\s*5)?\b", text):
        name = _dimension(match.group(1))
        if name and name not in out:
            out[name] = int(match.group(2))
    return out if set(out) == set(DIMENSIONS) else None


def _dimension(label: str) -> str | None:
    key = re.sub(r"[^a-z]+", "_", label.lower()).strip("_").replace("_amp_", "_and_")
    key = {"breadth_depth": "breadth_and_depth", "depth": "breadth_and_depth"}.get(key, key)
    return key if key in DIMENSIONS else None


class RubricJudge:
    kind = "rubric"

    def __init__(self, engine: Engine, cfg: JudgesConfig, context_window: int):
        self._engine = engine
        self._cfg = cfg
        self._template = templates.load(_TEMPLATES, "rubric")
        self._text_tokens = max(256, context_window - cfg.max_tokens - PROMPT_OVERHEAD)

    def judgment_id(self, candidate: Candidate) -> str:
        material = [self.kind, self._engine.model, self._template.identity, self._cfg.max_tokens,
                    self._text_tokens, candidate.sample_id]
        return "j-" + content_hash(material, 20)

    async def judge(self, candidate: Candidate, run_id: str) -> dict:
        content = self._template.render(
            instruction=quote("INSTRUCTION", candidate.instruction),
            # Labelled as a pair's first response: the judges' templates open alike up to that response,
            # so this request and the pairs that show the candidate first share their prefix (panel.py).
            response_a=quote("RESPONSE A", clip(candidate, self._text_tokens)))
        row = {"judgment_id": self.judgment_id(candidate), "run_id": run_id, "kind": self.kind,
               "judge_model": self._engine.model, "prompt_id": candidate.prompt_id,
               "sample_id": candidate.sample_id, "other_sample_id": None, "created_at": now()}
        answer = await ask_judge(self._engine, self._cfg, "judge_rubric", content, SCHEMA, self._template, candidate)
        if isinstance(answer, RequestFailed):
            return failed(row, answer)
        ratings, status = parse(answer.text)
        row = {**row, "scores": ratings, "quality": quality(ratings) if ratings else None,
               "parse_status": status, "raw": answer.text, "key": answer.key,
               "signal": "argmax: [judges] verdicts = \"text\""}
        if self._cfg.verdicts == "logprobs" and ratings:
            expected, row["signal"] = expected_ratings(answer.text, answer.logprobs)
            if expected:
                row["scores"] = {**ratings, "expected": expected}
                row["expected_quality"] = quality(expected)
        return row
