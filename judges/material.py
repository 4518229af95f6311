"""What a judge is shown: the candidate, quoted so that it cannot pose as instructions, and clipped
to fit the judge's context window.
"""

from __future__ import annotations

from dataclasses import dataclass

from longform.lengths import WORDS
from longform.config import JudgesConfig
from longform.engine import ChatRequest, Completion, Engine, RequestFailed
from longform.templates import PromptTemplate

# Tokens of a judge prompt around the quoted text (instruction, rubric, markers): what a text is
# clipped to leave room for, in every judge.
PROMPT_OVERHEAD = 700


@dataclass(frozen=True)
class Candidate:
    sample_id: str
    prompt_id: str
    instruction: str
    text: str
    tokens_out: int | None = None

    @property
    def words(self) -> int:
        return WORDS(self.text)

    def tokens_per_char(self) -> float:
        # Measured on the sample's own answer where we have it; otherwise a conservative ratio
        # (SmolLM2's tokenizer spends about 2 tokens per CJK character).
        if self.tokens_out and self.text:
            return self.tokens_out / len(self.text)
        return 0.7


def clip(candidate: Candidate, max_tokens: int) -> str:
    """The candidate's text, its middle elided if it would take more than `max_tokens` tokens.

    The beginning and the end are what a reader judges structure and completion by, so both stay.
    """
    text = candidate.text
    budget_chars = int(max_tokens / candidate.tokens_per_char())
    if len(text) <= budget_chars:
        return text
    head = budget_chars * 2 // 3
    tail = budget_chars - head
    omitted = WORDS(text[head:len(text) - tail])
    return f"{text[:head]}\n\n[… {omitted} words omitted …]\n\n{text[len(text) - tail:]}"


async def ask_judge(engine: Engine, cfg: JudgesConfig, stage: str, content: str, schema: dict | None,
                    template: PromptTemplate, subject: Candidate, *, max_tokens: int | None = None
                    ) -> Completion | RequestFailed:
    """The judge's answer about `subject` (a pair's first candidate), or the failure stored in its place.
    `max_tokens=1`: a one-letter verdict, which ends at its cap by design (not counted as truncated).
    With `[judges] verdicts = "logprobs"` the answer carries the top alternatives of each token."""
    try:
        return await engine.complete(ChatRequest(
            stage=stage, messages=[{"role": "user", "content": content}], max_tokens=max_tokens or cfg.max_tokens,
            temperature=cfg.temperature, json_schema=schema, template=template.identity,
            sample_id=subject.sample_id, prompt_id=subject.prompt_id, stops_at_cap=max_tokens == 1,
            top_logprobs=cfg.top_logprobs if cfg.verdicts == "logprobs" else None))
    except RequestFailed as e:
        return e


def failed(row: dict, error: RequestFailed) -> dict:
    return {**row, "parse_status": "failed", "raw": f"{error.reason}: {error.detail}", "key": error.key}
