"""GATEAU as a selection stage: rank what passed the filters and thresholds, keep the top k or top share.

It ranks the samples the run's SFT policy selected (GATEAU never resurrects a filtered sample),
stores each one's HMG, CAM, final score and rank in `scores`, and one `selections` row per sample
with purpose `gateau`. Exports then take the GATEAU selection instead of the SFT one.
"""

from __future__ import annotations

import hashlib
import math
import time

from judges.filters import paragraphs
from judges.gateau import GateauScorer, Sample, combine  # torch: import this module only when needed
from longform import hf_model
from longform.config import GateauConfig
from longform.store import Store, now

METRICS = ["gateau_hmg", "gateau_hmg_raw", "gateau_cam", "gateau_score", "gateau_rank"]


def scorer_for(cfg: GateauConfig) -> GateauScorer:
    model, tokenizer = hf_model.load_causal_lm(cfg.model)
    short = hf_model.load_causal_lm(cfg.short_model)[0] if cfg.short_model else None
    return GateauScorer(model, tokenizer, short_model=short, window=cfg.window, max_segments=cfg.max_segments,
                        batch_size=cfg.batch_size, max_tokens=cfg.max_tokens, cam_probe=cfg.cam_probe)


def candidates(store: Store, run_id: str) -> list[tuple[Sample, str]]:
    """The run's SFT picks, each with its prompt id."""
    _, rows = store.query(
        "SELECT s.sample_id, p.instruction, s.text, s.prompt_id FROM selections sel JOIN samples s USING (sample_id)"
        " JOIN prompts p ON p.prompt_id = s.prompt_id"
        " WHERE sel.run_id = ? AND sel.purpose = 'sft' AND sel.selected ORDER BY s.sample_id", [run_id])
    return [(Sample(sample_id, instruction, tuple(paragraphs(text))), prompt_id)
            for sample_id, instruction, text, prompt_id in rows]


def rank(picks: list[tuple[Sample, str]], scorer: GateauScorer, cfg: GateauConfig, *, run_id: str,
         top_k: int | None = None, ratio: float | None = None) -> tuple[list[dict], list[dict], dict]:
    """(scores rows, selections rows, summary). Reads and writes nothing: scoring can take hours,
    and the caller decides when to hold the database for writing."""
    started = time.perf_counter()
    measured = [scorer.measure(sample) for sample, _ in picks]
    seconds = time.perf_counter() - started
    scores = combine(measured, cfg.alpha)
    if top_k is None and ratio is None:
        top_k, ratio = cfg.top_k, cfg.ratio
    keep = top_k if top_k is not None else math.ceil((ratio if ratio is not None else 1.0) * len(picks))
    prompt_of = {sample.sample_id: prompt_id for sample, prompt_id in picks}
    source = f"gateau α={cfg.alpha} window={scorer.window}"
    score_rows, decisions = [], []
    for sample_id, values in scores.items():
        score_rows += [{"run_id": run_id, "sample_id": sample_id, "metric": metric, "value": value,
                        "source": source, "created_at": now()} for metric, value in values.items()]
        position = int(values["gateau_rank"])
        decisions.append({
            "selection_id": hashlib.sha256(f"{run_id}|gateau|{sample_id}".encode()).hexdigest()[:24],
            "run_id": run_id, "purpose": "gateau", "prompt_id": prompt_of[sample_id], "sample_id": sample_id,
            "rejected_sample_id": None, "selected": position <= keep,
            "reason": f"GATEAU rank {position} of {len(scores)}; keeping the top {keep}", "scores": values,
            "created_at": now()})
    tokens = sum(scorer.cost.tokens.values())
    summary = {"ranked": len(scores), "selected": min(keep, len(scores)), "seconds": round(seconds, 2),
               "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1) if seconds else None}
    return score_rows, decisions, summary


def save(store: Store, run_id: str, score_rows: list[dict], decisions: list[dict]) -> None:
    """Replace the run's earlier GATEAU decisions and scores with these."""
    store.clear_selection(run_id, "gateau", METRICS)
    store.add_many("scores", score_rows)
    store.add_many("selections", decisions)
    store.flush()


def select_gateau(store: Store, scorer: GateauScorer, cfg: GateauConfig, *, run_id: str,
                  top_k: int | None = None, ratio: float | None = None) -> dict:
    """Rank and save with one store (the build's own)."""
    score_rows, decisions, summary = rank(candidates(store, run_id), scorer, cfg, run_id=run_id,
                                          top_k=top_k, ratio=ratio)
    save(store, run_id, score_rows, decisions)
    return summary
