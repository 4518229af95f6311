"""Self-instruct seeds (Self-Lengthen's `instructions` stage): grow a small set of long-writing
instructions by few-shot prompting, keeping a candidate only if

- a yes/no check says a good answer needs more than 2000 words,
- it is 4-499 words long, and
- it is not a near-duplicate (rapidfuzz ratio ≥ the threshold) of a prompt already known: the
  seeds, every prompt in the database, and the candidates kept before it.

Every candidate, kept or not, is an `instruction_candidates` row with the reason.
"""

from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path

from rapidfuzz import fuzz, process

from longform.ids import row_id
from longform.lengths import WORDS
from longform.text import json_object, quote
from longform import templates
from longform.config import InstructionsConfig
from longform.engine import ChatRequest, Engine, RequestFailed
from longform.prompts import Prompt, prompt_id_for
from longform.clock import now

_TEMPLATES = Path(__file__).parent / "templates"
CHECK_SCHEMA = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
                "required": ["answer"]}


def clean(text: str) -> str:
    """The instruction in a model's reply: its first non-empty line that is not a preamble
    ("Here is a new instruction:"), without numbering or quotes."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = next((ln for ln in lines if not ln.endswith(":")), "")
    line = re.sub(r"^(?:\d+[.)]|[-*•]|instruction\s*\d*\s*:)\s*", "", line, flags=re.IGNORECASE)
    return line.strip().strip('"“”').strip()


class SelfInstruct:
    def __init__(self, engine: Engine, cfg: InstructionsConfig, *, seed: int):
        self._engine = engine
        self._cfg = cfg
        self._seed = seed
        self._generate = templates.load(_TEMPLATES, "self_instruct_generate")
        self._check = templates.load(_TEMPLATES, "self_instruct_check")

    async def expand(self, seeds: list[Prompt], known: list[str], run_id: str) -> tuple[list[Prompt], list[dict]]:
        """(new prompts, one row per candidate), trying at most `max_attempts` candidates."""
        pool = [p.instruction for p in seeds]
        seen = [*known, *pool]
        kept: list[Prompt] = []
        rows: list[dict] = []
        attempt = 0
        while len(kept) < self._cfg.n and attempt < self._cfg.max_attempts:
            # A batch as wide as the endpoint's concurrency is written at once; candidates are then
            # checked in attempt order, so which one is kept as the original does not depend on timing.
            size = min(sum(lane.limiter.ceiling for lane in self._engine.lanes), self._cfg.max_attempts - attempt)
            answers = await asyncio.gather(*(self._candidate(pool, attempt + k) for k in range(size)))
            for k, (text, key) in enumerate(answers):
                if len(kept) >= self._cfg.n:
                    break
                reason = await self._reject_reason(text, seen, attempt + k)
                accepted = reason is None
                rows.append({"candidate_id": row_id(run_id, attempt + k),
                             "run_id": run_id, "attempt": attempt + k, "instruction": text, "accepted": accepted,
                             "reason": reason or "kept", "key": key, "created_at": now()})
                if accepted:
                    kept.append(Prompt(prompt_id_for(text), text, None, {"source": "self_instruct"}))
                    seen.append(text)
            attempt += size
        return kept, rows

    async def _candidate(self, pool: list[str], attempt: int) -> tuple[str, str | None]:
        rng = random.Random(self._seed * 100_003 + attempt)
        shots = rng.sample(pool, min(self._cfg.shots, len(pool)))
        examples = "\n".join(f"{i + 1}. {s}" for i, s in enumerate(shots))
        try:
            answer = await self._engine.complete(ChatRequest(
                stage="self_instruct", messages=[{"role": "user", "content": self._generate.render(examples=examples)}],
                max_tokens=96, temperature=self._cfg.temperature, top_p=0.95, seed=self._seed + attempt,
                sample_index=attempt, template=self._generate.identity))
        except RequestFailed as e:
            return "", e.key
        return clean(answer.text), answer.key

    async def _reject_reason(self, text: str, seen: list[str], attempt: int) -> str | None:
        words = WORDS(text)
        if not 4 <= words <= 499:
            return f"{words} words; an instruction must be 4-499"
        match = process.extractOne(text, seen, scorer=fuzz.ratio, score_cutoff=self._cfg.near_duplicate)
        if match:
            return f"{match[1]:.0f}% similar to {match[0][:60]!r}"
        try:
            verdict = await self._engine.complete(ChatRequest(
                stage="self_instruct_check",
                messages=[{"role": "user", "content": self._check.render(instruction=quote("INSTRUCTION", text))}],
                max_tokens=16, temperature=0.0, json_schema=CHECK_SCHEMA, sample_index=attempt,
                template=self._check.identity))
        except RequestFailed as e:
            return f"check failed: {e.reason}"
        answer = (json_object(verdict.text) or {}).get("answer")
        if answer is None:
            answer = "yes" if re.match(r"\s*yes\b", verdict.text, re.IGNORECASE) else "no"
        return None if answer == "yes" else "the check says a good answer needs no more than 2000 words"
