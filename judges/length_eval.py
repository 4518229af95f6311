"""`longform eval-length`: how well a model writes to a requested length.

Generates for prompts that each name a length (LongWrite-Ruler style: the same instructions at
several targets), then scores LongBench-Write's S_l and Ruler's PM/FM. Run it on a base model and
on the model trained from an export to see what the data did.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Callable

from judges.ruler import ruler_metrics
from longform.errors import LongformError
from longform.length_reader import spec_for
from longform.lengths import WORDS, LengthSpec
from longform.prompts import Prompt
from longform.clock import now

# generate(instruction, max_new_tokens) -> (text, tokens generated, finish reason)
Generate = Callable[[str, int], tuple[str, int, str]]


def targets(prompts: list[Prompt], source: str) -> list[tuple[Prompt, LengthSpec]]:
    out = []
    for p in prompts:
        # A build falls back to the default length; an evaluation needs a length the prompt names.
        spec = spec_for(p, 1)
        if spec.source == "default":
            raise LongformError(f"{source}: prompt {p.prompt_id!r} names no length; give it target_words")
        out.append((p, spec))
    return out


def evaluate(generate: Generate, prompts: list[tuple[Prompt, LengthSpec]], *, model: str, tokens_per_word: float,
             max_new_tokens: int | None, record: Callable[[dict], None]) -> dict:
    eval_id = f"e-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    rows = []
    for prompt, spec in prompts:
        required = spec.aim
        budget = int(required * tokens_per_word * 1.5) + 64
        if max_new_tokens:
            budget = min(budget, max_new_tokens)
        text, tokens, finish = generate(prompt.instruction, budget)
        words = WORDS(text)
        row = {"eval_id": eval_id, "model": model, "prompt_id": prompt.prompt_id, "instruction": prompt.instruction,
               "required_words": required, "text": text, "words": words, "length_counter": WORDS.name,
               "length_score": spec.score(words), "length_kind": spec.kind, "bound_ok": spec.bound_ok(words),
               "tokens_out": tokens, "finish_reason": finish,
               "created_at": now()}
        record(row)
        rows.append(row)
    ruler = ruler_metrics([(r["required_words"], r["words"]) for r in rows])
    return {"eval_id": eval_id, "model": model, "rows": rows,
            "mean_length_score": statistics.fmean(r["length_score"] for r in rows) if rows else None,
            "ruler": ruler}
