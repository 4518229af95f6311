"""Graded verdicts from token log-probabilities.

A judge's argmax throws most of what it knows away: a small or position-biased judge answers "A"
every time while its probabilities still move with the answers. Length-Controlled AlpacaEval fits on
the judge's probability of each answer, read from the verdict token's logprobs; G-Eval scores a
rubric by the expected rating under the probabilities of "1" … "5". Both are read here from the
engine's `Completion.logprobs` (the OpenAI `top_logprobs` format every server we target speaks).
"""

from __future__ import annotations

import math

from longform.engine import TokenLogprobs

# Token text around a label that does not change it: ' A', '"A', 'A"'.
_STRIP = " \t\n\"'*:.()"


def label_probabilities(alternatives: dict[str, float], labels: tuple[str, ...], *, floor_missing: bool = True
                        ) -> dict[str, float] | None:
    """The labels' probabilities among the top alternatives of one token, renormalised over the
    labels; None if none of them is there. With `floor_missing`, a label missing from the top-k is
    given the least probability shown (an upper bound on its own), so one missing label of two does
    not read as certainty; without it, missing labels get nothing (G-Eval's renormalisation)."""
    mass: dict[str, float] = {}
    for token, logprob in alternatives.items():
        label = token.strip(_STRIP)
        if label in labels:
            mass[label] = mass.get(label, 0.0) + math.exp(logprob)
    if not mass:
        return None
    if floor_missing:
        floor = math.exp(min(alternatives.values()))
        for label in labels:
            mass.setdefault(label, floor)
    total = sum(mass.values())
    return {label: m / total for label, m in mass.items()}


def first_token_preference(logprobs: list[TokenLogprobs] | None, first: str = "A", second: str = "B"
                           ) -> tuple[float | None, str]:
    """P(first is better) from the first answer token; (None, why not) when it cannot be read."""
    if not logprobs:
        return None, "argmax: the server returned no logprobs"
    probs = label_probabilities(logprobs[0][2] or {logprobs[0][0]: logprobs[0][1]}, (first, second))
    if probs is None:
        return None, f"argmax: neither {first!r} nor {second!r} among the verdict token's top alternatives"
    return probs[first], "logprobs"


def token_at(logprobs: list[TokenLogprobs], offset: int) -> TokenLogprobs | None:
    """The generated token that covers character `offset` of the answer text."""
    position = 0
    for item in logprobs:
        position += len(item[0])
        if position > offset:
            return item
    return None


def expected_rating(alternatives: dict[str, float], scale: range = range(1, 6)) -> float | None:
    """Σ k·P(k) over the ratings among one token's top alternatives, renormalised; None if none is."""
    probs = label_probabilities(alternatives, tuple(str(k) for k in scale), floor_missing=False)
    if probs is None:
        return None
    return sum(int(k) * p for k, p in probs.items())
