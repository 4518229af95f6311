"""The selection policy: which samples become SFT rows and which pairs become DPO rows.

Every sample gets a decision with its reason and the scores it was made on, selected or not.

SFT: a sample is kept if it passes every required filter and the length-controlled quality floor.
DPO, per prompt: chosen = the best-ranked candidate that meets the length requirement and passes the
required filters; rejected = the worst-ranked other candidate, if it is at least `dpo_margin` below.
Candidates are ranked by the length-controlled rubric score, else the length-controlled pairwise
logit, else (when no length fit was identified) the raw judge score — the decision names which.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from longform.ids import row_id
from longform.checks import Check
from longform.config import SelectionConfig

RANKINGS = ("lc_quality", "lc_pairwise_logit", "quality", "pairwise_logit")


@dataclass
class Scored:
    sample_id: str
    prompt_id: str
    length_score: float
    checks: list[Check] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)

    def failed(self, required: list[str]) -> list[Check]:
        return [c for c in self.checks if not c.passed and c.filter in required]


def select(samples: list[Scored], cfg: SelectionConfig, required: list[str], run_id: str) -> list[dict]:
    return _sft(samples, cfg, required, run_id) + _dpo(samples, cfg, required, run_id)


def _sft(samples: list[Scored], cfg: SelectionConfig, required: list[str], run_id: str) -> list[dict]:
    rows = []
    for s in samples:
        failed = s.failed(required)
        lc = s.scores.get("lc_quality")
        if failed:
            selected, reason = False, "; ".join(f"{c.filter}: {c.reason}" for c in failed)
        elif cfg.min_lc_quality is not None and lc is None:
            selected, reason = False, "no length-controlled quality score (rubric judge off or fit not identified)"
        elif cfg.min_lc_quality is not None and lc < cfg.min_lc_quality:
            selected, reason = False, f"LC quality {lc:.1f} < {cfg.min_lc_quality:g}"
        else:
            selected, reason = True, "passed every required filter" + (
                f" and LC quality ≥ {cfg.min_lc_quality:g}" if cfg.min_lc_quality is not None else "")
        rows.append(_row(run_id, "sft", s.prompt_id, s.sample_id, None, selected, reason,
                         {"length_score": s.length_score, **s.scores}))
    return rows


def _dpo(samples: list[Scored], cfg: SelectionConfig, required: list[str], run_id: str) -> list[dict]:
    by_prompt: dict[str, list[Scored]] = defaultdict(list)
    for s in samples:
        by_prompt[s.prompt_id].append(s)
    rows = []
    for prompt_id, group in sorted(by_prompt.items()):
        ranking = next((r for r in RANKINGS if all(r in s.scores for s in group)), None)
        if len(group) < 2 or ranking is None:
            reason = "fewer than 2 candidates" if len(group) < 2 else "candidates lack a common judge score"
            rows.append(_row(run_id, "dpo", prompt_id, None, None, False, reason, {}))
            continue
        eligible = [s for s in group if s.length_score >= cfg.dpo_min_length_score and not s.failed(required)]
        if not eligible:
            rows.append(_row(run_id, "dpo", prompt_id, None, None, False,
                             f"no candidate meets S_l ≥ {cfg.dpo_min_length_score:g} and the required filters",
                             {s.sample_id: s.scores[ranking] for s in group}))
            continue
        chosen = max(eligible, key=lambda s: (s.scores[ranking], s.sample_id))
        rejected = min((s for s in group if s is not chosen), key=lambda s: (s.scores[ranking], s.sample_id))
        margin = chosen.scores[ranking] - rejected.scores[ranking]
        numbers = {"ranking": ranking, "chosen": chosen.scores[ranking], "rejected": rejected.scores[ranking],
                   "margin": margin, "chosen_length_score": chosen.length_score,
                   "rejected_length_score": rejected.length_score}
        if margin < cfg.dpo_margin:
            rows.append(_row(run_id, "dpo", prompt_id, chosen.sample_id, rejected.sample_id, False,
                             f"{ranking} margin {margin:.2f} < {cfg.dpo_margin:g}", numbers))
        else:
            rows.append(_row(run_id, "dpo", prompt_id, chosen.sample_id, rejected.sample_id, True,
                             f"chosen by {ranking}, margin {margin:.2f}", numbers))
    return rows


def _row(run_id: str, purpose: str, prompt_id: str, sample_id: str | None, rejected: str | None,
         selected: bool, reason: str, scores: dict) -> dict:
    return {"selection_id": row_id(run_id, purpose, prompt_id, sample_id, rejected), "run_id": run_id, "purpose": purpose,
            "prompt_id": prompt_id, "sample_id": sample_id, "rejected_sample_id": rejected, "selected": selected,
            "reason": reason, "scores": scores}
