"""The pairwise judge: two candidates for the same prompt, asked in both orders.

Judges favour a position as well as length. Asking A-then-B and B-then-A and storing both verdicts
makes position bias measurable (the length-control fit has a term for it) instead of folded
silently into one verdict; a pair whose two verdicts disagree is kept as it is.

With `[judges] verdicts = "logprobs"` (the default) the judge answers one letter, and `p_first`, its
probability that the first response is better, is read from that token's top alternatives
(judges/verdicts.py), as Length-Controlled AlpacaEval weights its preferences. A pair's
position-debiased preference is (P(first | A,B) + 1 − P(first | B,A)) / 2.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from judges.material import PROMPT_OVERHEAD, Candidate, ask_judge, clip, failed
from longform.text import json_object, quote
from judges.verdicts import first_token_preference
from longform import templates
from longform.config import JudgesConfig
from longform.engine import Engine, RequestFailed
from longform.clock import now
from longform.ids import content_hash

SCHEMA = {
    "type": "object",
    "properties": {"winner": {"type": "string", "enum": ["A", "B", "tie"]}},
    "required": ["winner"],
}
_TEMPLATES = Path(__file__).parent / "templates"

def parse(text: str) -> tuple[str | None, str]:
    """(winner, status): winner is `A`, `B` or `tie`; status `json`, `lenient` or `unparsable`."""
    value = json_object(text)
    if value is not None and _winner(str(value.get("winner", ""))):
        return _winner(str(value["winner"])), "json"
    found = re.search(r"(?i:winner|better)\b[^.\n]{0,30}?\b(A|B|[Tt]ie)\b", text)
    if found:
        return _winner(found.group(1)), "lenient"
    return None, "unparsable"


def _winner(label: str) -> str | None:
    label = label.strip().strip('"').lower()
    return {"a": "A", "b": "B", "tie": "tie"}.get(label)


class PairwiseJudge:
    kind = "pairwise"

    def __init__(self, engine: Engine, cfg: JudgesConfig, context_window: int):
        self._engine = engine
        self._cfg = cfg
        self._letter = cfg.verdicts == "logprobs"
        self._template = templates.load(_TEMPLATES, "pairwise_letter" if self._letter else "pairwise")
        self._text_tokens = max(256, (context_window - cfg.max_tokens - PROMPT_OVERHEAD) // 2)

    def judgment_id(self, first: Candidate, second: Candidate) -> str:
        material = [self.kind, self._engine.model, self._template.identity, self._cfg.max_tokens,
                    self._text_tokens, first.sample_id, second.sample_id]
        return "j-" + content_hash(material, 20)

    async def judge(self, a: Candidate, b: Candidate, run_id: str) -> list[dict]:
        """Both orders; one row each, `sample_id` being the candidate shown first."""
        return list(await asyncio.gather(self.judge_order(a, b, run_id), self.judge_order(b, a, run_id)))

    async def judge_order(self, first: Candidate, second: Candidate, run_id: str) -> dict:
        """One order: `first` shown as response A."""
        content = self._template.render(
            instruction=quote("INSTRUCTION", first.instruction),
            response_a=quote("RESPONSE A", clip(first, self._text_tokens)),
            response_b=quote("RESPONSE B", clip(second, self._text_tokens)))
        row = {"judgment_id": self.judgment_id(first, second), "run_id": run_id, "kind": self.kind,
               "judge_model": self._engine.model, "prompt_id": first.prompt_id,
               "sample_id": first.sample_id, "other_sample_id": second.sample_id, "created_at": now()}
        if self._letter:
            # One token: the verdict letter, with its alternatives.
            answer = await ask_judge(self._engine, self._cfg, "judge_pairwise", content, None, self._template, first,
                                     max_tokens=1)
        else:
            answer = await ask_judge(self._engine, self._cfg, "judge_pairwise", content, SCHEMA, self._template, first)
        if isinstance(answer, RequestFailed):
            return failed(row, answer)
        if not self._letter:
            winner, status = parse(answer.text)
            return {**row, "winner": winner, "parse_status": status, "raw": answer.text, "key": answer.key,
                    "signal": "argmax: [judges] verdicts = \"text\""}
        letter = answer.text.strip(" \t\n\"'*:.()")
        winner, status = (letter, "letter") if letter in ("A", "B") else (None, "unparsable")
        p_first, signal = first_token_preference(answer.logprobs)
        return {**row, "winner": winner, "parse_status": status, "raw": answer.text, "key": answer.key,
                "p_first": p_first, "signal": signal}
