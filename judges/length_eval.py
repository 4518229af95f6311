"""What `longform eval` measures: each answer's length against what its prompt asked, and each
model's summary with bootstrap intervals, and the paired differences between two models.

An answer is scored as the build scores its samples (LongBench-Write's S_l by the spec's kind,
`bound_ok`), plus how it stopped (the model's end of sequence, or the token cap) and whether it
repeats itself (the filters' n-gram and paragraph checks). A model's S_l is summarised by its mean
and median with percentile-bootstrap 95% intervals; two models answered the same prompts, so their
difference is the mean of per-prompt differences with a paired bootstrap interval (resampling
prompts, not answers), which is what lets 24 prompts tell two models apart.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Iterable

import numpy as np
from scipy import stats

from judges import filters
from judges.ruler import ruler_metrics
from longform.errors import LongformError
from longform.length_reader import spec_for
from longform.lengths import WORDS, LengthSpec
from longform.prompts import Prompt, load_prompt_file

RESAMPLES = 2000
# Paragraph similarity from which an answer counts as repeating itself: the filters' default.
REPEATED_PARAGRAPHS = 90.0
# Metrics compared between models, each per answer (booleans count as 0/1).
PAIRED_METRICS = ("length_score", "eos", "repetitive", "quality")


def eval_prompts(path: Path, limit: int | None = None) -> list[tuple[Prompt, LengthSpec]]:
    """Each prompt with the length it asks for, from longform's prompts JSONL or LongBench-Write's
    format (longform/prompts.py: load_prompt_file)."""
    out = []
    for p in load_prompt_file(path, limit):
        # A build falls back to a default length; an evaluation needs one the prompt names.
        spec = spec_for(p, 1)
        if spec.source == "default":
            raise LongformError(f"{path}: prompt {p.prompt_id!r} names no length; give it target_words")
        out.append((p, spec))
    return out


def budget(spec: LengthSpec, tokens_per_word: float, cap: int | None) -> int:
    """max_tokens for an answer: room for half again the longest length the spec allows, so an
    answer that overshoots is measured as overshooting (S_l 83 at 1.5×) rather than cut at the target."""
    longest = spec.high or spec.aim
    tokens = int(longest * 1.5 * tokens_per_word) + 64
    return min(tokens, cap) if cap else tokens


def score_answer(spec: LengthSpec, text: str, finish_reason: str | None) -> dict:
    """The per-answer columns of `length_evals`."""
    words = WORDS(text)
    return {"words": words, "length_counter": WORDS.name, "length_score": spec.score(words),
            "required_words": spec.aim, "length_kind": spec.kind, "length_low": spec.low,
            "length_high": spec.high, "length_unit": spec.unit, "bound_ok": spec.bound_ok(words),
            "finish_reason": finish_reason or "unknown",
            "repeated_ngram": not filters.repeated_ngram(text).passed,
            "repeated_paragraphs": not filters.repeated_paragraphs(text, REPEATED_PARAGRAPHS).passed}


def per_answer(row: dict, metric: str) -> float | None:
    """One answer's value of a paired metric (None: not measured for it)."""
    if row.get("error"):
        return None
    if metric == "eos":
        return float(row["finish_reason"] == "stop")
    if metric == "repetitive":
        return float(bool(row["repeated_ngram"] or row["repeated_paragraphs"]))
    value = row.get(metric)
    return None if value is None else float(value)


def interval(values: list[float], statistic=np.mean, seed: int = 0) -> tuple[float | None, float | None]:
    """Percentile-bootstrap 95% interval (scipy's); the point itself for a constant sample."""
    if len(values) < 2:
        return (None, None)
    if len(set(values)) == 1:
        return (values[0], values[0])
    result = stats.bootstrap((np.asarray(values, dtype=float),), statistic, n_resamples=RESAMPLES,
                             confidence_level=0.95, method="percentile", random_state=np.random.default_rng(seed))
    return (float(result.confidence_interval.low), float(result.confidence_interval.high))


def summarize(rows: list[dict]) -> dict:
    """A model's numbers over its answers (failed requests counted, not scored)."""
    answered = [r for r in rows if not r.get("error")]
    scores = [r["length_score"] for r in answered]
    quality = [r["quality"] for r in answered if r.get("quality") is not None]
    bounded = [r["bound_ok"] for r in answered if r.get("bound_ok") is not None]
    ruler = ruler_metrics([(r["required_words"], r["words"]) for r in answered])
    ratio = [r["words"] / r["required_words"] for r in answered if r["required_words"]]
    return {
        "n": len(rows), "answered": len(answered), "failed": len(rows) - len(answered),
        "mean_length_score": statistics.fmean(scores) if scores else None,
        "mean_length_score_ci": interval(scores),
        "median_length_score": statistics.median(scores) if scores else None,
        "median_length_score_ci": interval(scores, np.median),
        "bound_ok_rate": statistics.fmean(bounded) if bounded else None,
        "ruler_pm": ruler["overall"]["PM"], "ruler_fm": ruler["overall"]["FM"], "ruler_n": ruler["overall"]["n"],
        "eos_rate": _rate(answered, "eos"), "repetition_rate": _rate(answered, "repetitive"),
        "median_written_to_asked": statistics.median(ratio) if ratio else None,
        "mean_quality": statistics.fmean(quality) if quality else None,
        "mean_quality_ci": interval(quality),
    }


def _rate(rows: list[dict], metric: str) -> float | None:
    values = [per_answer(r, metric) for r in rows]
    return statistics.fmean(values) if values else None


def paired(a: Iterable[dict], b: Iterable[dict], metric: str, seed: int = 0) -> dict:
    """Mean of per-prompt (a − b) over the prompts both answered, with a paired bootstrap 95% interval."""
    by_prompt = {r["prompt_id"]: per_answer(r, metric) for r in b}
    diffs = []
    for r in a:
        x, y = per_answer(r, metric), by_prompt.get(r["prompt_id"])
        if x is not None and y is not None:
            diffs.append(x - y)
    low, high = interval(diffs, seed=seed)
    return {"metric": metric, "n": len(diffs), "mean_diff": statistics.fmean(diffs) if diffs else None,
            "ci_low": low, "ci_high": high}


def verdict(pair: dict) -> str:
    """How a paired difference reads: above or below zero only when its whole interval is."""
    if pair["ci_low"] is None:
        return "too few prompts"
    if pair["ci_low"] > 0:
        return "higher"
    if pair["ci_high"] < 0:
        return "lower"
    return "not significant"
