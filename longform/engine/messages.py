"""What the engine is asked and what it answers: requests, completions, failures and counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ChatRequest:
    stage: str
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = None
    json_schema: dict[str, Any] | None = None
    sample_index: int = 0
    # Identity of the prompt template that built `messages` (name and content hash).
    template: str = ""
    # The start of the assistant's answer, to be continued: the answer returned is what follows it.
    assistant_prefix: str | None = None
    # Who gets a free slot first when all are taken: lowest value first (throttle.py). Not part of
    # the request, so not of its cache key.
    priority: float = 0.0
    # A served model other than the endpoint's, e.g. one of several LoRA adapters on one server.
    model: str | None = None
    # Provenance, stored with the request row, and not part of the cache key: the sample this
    # request writes or judges (also its routing key), its prompt, and the section it writes.
    sample_id: str | None = None
    prompt_id: str | None = None
    section: int | None = None
    # Ask for the log-probabilities of each generated token and its `top_logprobs` alternatives
    # (judges read graded verdicts from them). Part of the body, so of the cache key.
    top_logprobs: int | None = None
    # An empty answer is an answer here, cached like any other (a continued text the model ends at
    # once); elsewhere it is an `empty_content` failure, never cached, asked again by a rerun.
    allow_empty: bool = False
    # The answer is meant to end at max_tokens (a one-letter verdict): reaching it is not counted as
    # truncation in the stage's counters. Not part of the body.
    stops_at_cap: bool = False


# Per generated token: (token, its logprob, {alternative: logprob} for the top alternatives).
TokenLogprobs = tuple[str, float, dict[str, float]]


@dataclass(frozen=True)
class Completion:
    key: str
    text: str
    finish_reason: str | None
    tokens_in: int
    tokens_out: int
    cached: bool
    # None when not asked for, or when the server does not return them.
    logprobs: list[TokenLogprobs] | None = None

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class RequestFailed(Exception):
    def __init__(self, key: str, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.key = key
        self.reason = reason
        self.detail = detail


@dataclass
class StageStats:
    requests: int = 0       # answered or failed after reaching the network
    attempts: int = 0       # HTTP attempts, retries included
    cache_hits: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    truncated: int = 0
    errors: Counter = field(default_factory=Counter)
    first_sent: float | None = None
    last_done: float | None = None

    def as_row(self) -> dict:
        wall = (self.last_done - self.first_sent) if self.first_sent and self.last_done else 0.0
        return {"requests": self.requests, "attempts": self.attempts, "cache_hits": self.cache_hits,
                "tokens_in": self.tokens_in, "tokens_out": self.tokens_out, "truncated": self.truncated,
                "errors": dict(self.errors), "wall_s": round(wall, 3)}
