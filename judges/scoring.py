"""The corpus-wide scoring stage: filters, length-controlled fits and the selection, for one run.

It reads what the run wrote (samples, judgments) and stores, all for that run: a `filter_checks`
row per filter and sample or prompt, the `length_fits`, per-sample `scores`, and a `selections` row
per decision.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from judges import filters
from judges.length_control import LengthFit, Rated, Verdict, fit_pairwise, fit_rubric, sample_preferences
from judges.selection import Scored, select
from longform.config import Settings
from longform.lengths import asked
from longform.clock import now
from longform.store import Store


@dataclass
class ScoringSummary:
    sft_selected: int
    dpo_pairs: int
    failed_checks: dict[str, int]
    fits: dict[str, dict]

    def as_dict(self) -> dict:
        return {"sft_selected": self.sft_selected, "dpo_pairs": self.dpo_pairs,
                "failed_checks": self.failed_checks, "length_fits": self.fits}


def score_run(store: Store, settings: Settings, *, run_id: str, sample_ids: list[str],
              judgment_ids: list[str], judge_model: str) -> ScoringSummary:
    samples = store.scored_samples(sample_ids)
    prompt_checks = _near_duplicate_prompts(store, {s["prompt_id"] for s in samples},
                                            settings.filters.near_duplicate_prompts)
    scored = {s["sample_id"]: Scored(s["sample_id"], s["prompt_id"], s["length_score"],
                                     _sample_checks(s, settings) + [prompt_checks[s["prompt_id"]]])
              for s in samples}

    judgments = store.judgments(judgment_ids)
    by_id = {s["sample_id"]: s for s in samples}
    fits = []
    # The graded score where the judge's logprobs gave one, else the argmax (judges/rubric.py).
    rated = [Rated(j["sample_id"], j["prompt_id"], _graded(j["expected_quality"], j["quality"]),
                   by_id[j["sample_id"]]["words"], by_id[j["sample_id"]]["required_words"])
             for j in judgments if j["kind"] == "rubric" and j["quality"] is not None and j["sample_id"] in scored]
    if rated:
        fit, lc = fit_rubric(rated)
        fits.append(fit)
        for r in rated:
            scored[r.sample_id].scores["quality"] = r.quality
            if r.sample_id in lc:
                scored[r.sample_id].scores["lc_quality"] = lc[r.sample_id]
    group_by = settings.judges.compare
    verdicts = [Verdict(j["sample_id"], j["other_sample_id"], by_id[j["sample_id"]]["words"],
                        by_id[j["other_sample_id"]]["words"], by_id[j["sample_id"]][group_by],
                        by_id[j["other_sample_id"]][group_by], j["winner"], j["prompt_id"], j["p_first"])
                for j in judgments if j["kind"] == "pairwise" and (j["winner"] or j["p_first"] is not None)
                and j["sample_id"] in by_id and j["other_sample_id"] in by_id]
    if verdicts:
        for sample_id, preference in sample_preferences(verdicts).items():
            scored[sample_id].scores["pairwise_preference"] = preference
        fit, logits = fit_pairwise(verdicts, instruction_min=settings.judges.instruction_terms_min)
        fits.append(fit)
        for sample_id, values in logits.items():
            scored[sample_id].scores.update(values)

    for fit in fits:
        store.add("length_fits", _fit_row(fit, run_id, judge_model))
    for s in scored.values():
        for metric, value in s.scores.items():
            store.add("scores", {"run_id": run_id, "sample_id": s.sample_id, "metric": metric, "value": value,
                                 "source": f"{judge_model} · {metric}", "created_at": now()})
        for check in s.checks:
            if check.filter != "near_duplicate_prompt":
                store.add("filter_checks", _check_row(run_id, "sample", s.sample_id, check))
    for prompt_id, check in prompt_checks.items():
        store.add("filter_checks", _check_row(run_id, "prompt", prompt_id, check))

    decisions = select(list(scored.values()), settings.selection, settings.filters.required, run_id)
    for row in decisions:
        store.add("selections", {**row, "created_at": now()})
    store.flush()
    failed = Counter(c.filter for s in scored.values() for c in s.checks if not c.passed)
    return ScoringSummary(
        sft_selected=sum(r["selected"] for r in decisions if r["purpose"] == "sft"),
        dpo_pairs=sum(r["selected"] for r in decisions if r["purpose"] == "dpo"),
        failed_checks=dict(failed),
        fits={f.kind: {"status": f.status, "phi": f.phi, "ci": [f.ci_low, f.ci_high], "n": f.n, "reason": f.reason}
              for f in fits})


def _sample_checks(sample: dict, settings: Settings) -> list[filters.Check]:
    text = sample["text"]
    return [
        filters.min_length_score(sample["length_score"], settings.selection.min_length_score),
        filters.length_bound(sample["bound_ok"], asked(sample)),
        filters.plan_labels(text),
        filters.repeated_paragraphs(text, settings.filters.repeated_paragraphs),
        filters.ends_with_punctuation(text),
        filters.repeated_ngram(text),
        filters.meta_words(text),
    ]


def _near_duplicate_prompts(store: Store, prompt_ids: set[str], threshold: float) -> dict[str, filters.Check]:
    """This run's prompts against every prompt in the database, earliest registered first."""
    rows = store.prompts_oldest_first()
    found = filters.near_duplicates([r[1] for r in rows], threshold)
    checks = {}
    for i, (prompt_id, _) in enumerate(rows):
        if prompt_id not in prompt_ids:
            continue
        if i in found:
            j, score = found[i]
            checks[prompt_id] = filters.Check("near_duplicate_prompt", False,
                                              f"{score:.0f}% similar to prompt {rows[j][0]!r}")
        else:
            checks[prompt_id] = filters.Check("near_duplicate_prompt", True)
    return checks


def _graded(expected: float | None, argmax: float) -> float:
    return argmax if expected is None else expected


def _fit_row(fit: LengthFit, run_id: str, judge_model: str) -> dict:
    return {"run_id": run_id, "judge_model": judge_model, "kind": fit.kind, "status": fit.status,
            "reason": fit.reason, "n": fit.n, "phi": fit.phi, "ci_low": fit.ci_low, "ci_high": fit.ci_high,
            "scale": fit.scale, "detail": fit.detail, "created_at": now()}


def _check_row(run_id: str, subject: str, subject_id: str, check: filters.Check) -> dict:
    return {"run_id": run_id, "subject": subject, "subject_id": subject_id, "filter": check.filter,
            "passed": check.passed, "reason": check.reason, "created_at": now()}
