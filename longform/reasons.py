"""The reasons a stored row gives, one enum each: why length control stopped (`samples.length_stop`)
and why a sample failed (`failures.reason`). Writers set them, the store keeps their values, and
the viewer shows what each means: one list, so a reason cannot be renamed in one place only."""

from __future__ import annotations

from enum import StrEnum


class LengthStop(StrEnum):
    """Why AgentWrite's closed-loop length control stopped adding text."""

    IN_BAND = "in_band"
    EXTENDED_IN_BAND = "extended_in_band"
    STOPPED_EARLY_OVER_BAND = "stopped_early_over_band"
    OVER_BAND = "over_band"
    EXTRA_SECTION_EMPTY = "extra_section_empty"
    EXTRA_BUDGET_SPENT = "extra_budget_spent"
    PLAN_DONE_SHORT = "plan_done_short"
    PLAN_DONE = "plan_done"
    DEGENERATE_TEXT = "degenerate_text"

    @property
    def meaning(self) -> str:
        return _LENGTH_STOP[self]


_LENGTH_STOP = {
    LengthStop.IN_BAND: "every planned section written; the text is within the spec's band",
    LengthStop.EXTENDED_IN_BAND: "extra sections brought a short text into the band",
    LengthStop.STOPPED_EARLY_OVER_BAND: "the band was reached before the plan ended; the remaining sections were skipped",
    LengthStop.OVER_BAND: "the last section took the text past the band",
    LengthStop.EXTRA_SECTION_EMPTY: "an extra section came back empty while the text was still short",
    LengthStop.EXTRA_BUDGET_SPENT: "still short after [agentwrite] max_extra_sections extra sections",
    LengthStop.PLAN_DONE_SHORT: "the plan was written and the text is short; extra sections are off",
    LengthStop.PLAN_DONE: "the plan was written as planned (length control off)",
    LengthStop.DEGENERATE_TEXT: "a section spent more tokens per word than [agentwrite] max_tokens_per_word"
                                " (ids, markup or symbols in a loop); writing stopped after it",
}


class FailureReason(StrEnum):
    """Why a sample (or a request) failed. The engine's HTTP failures are `http_<status>`
    (`FailureReason.http(503)`), and an unexpected exception keeps its class name."""

    UNPARSABLE_PLAN = "unparsable_plan"
    EMPTY_SECTION = "empty_section"
    INSUFFICIENT_GROWTH = "insufficient_growth"
    EMPTY_CONTENT = "empty_content"
    TIMEOUT = "timeout"
    CONNECTION = "connection"

    @staticmethod
    def http(status: int) -> str:
        return f"http_{status}"

    @property
    def meaning(self) -> str:
        return _FAILURE[self]


_FAILURE = {
    FailureReason.UNPARSABLE_PLAN: "the plan answer held no sections a parser could read",
    FailureReason.EMPTY_SECTION: "a section came back with nothing but its label",
    FailureReason.INSUFFICIENT_GROWTH: "Self-Lengthen's rounds did not grow the answer by [self_lengthen] min_growth",
    FailureReason.EMPTY_CONTENT: "the model returned no text",
    FailureReason.TIMEOUT: "the server did not answer within [endpoint] timeout_s, every attempt",
    FailureReason.CONNECTION: "the server could not be reached, every attempt",
}


def meaning(value: str | None) -> str:
    """What a stored reason means, for people reading it (empty for a reason not listed here)."""
    for kind in (LengthStop, FailureReason):
        try:
            return kind(value).meaning
        except ValueError:
            continue
    if value and value.startswith("http_"):
        return f"the server answered HTTP {value[5:]}"
    return ""
