"""GATEAU as a selection stage: rank what passed the filters and thresholds, keep the top k or top share.

It ranks the samples the run's SFT policy selected (GATEAU never resurrects a filtered sample),
stores each one's HMG, CAM, final score and rank in `scores`, and one `selections` row per sample
with purpose `gateau`. Exports then take the GATEAU selection instead of the SFT one.

Every sample gets a decision: one the model cannot score at all gets a `selections` row saying so
(not selected), and the others are ranked without it. Measures are cached in `gateau_measures` by
a hash of what determines them (instruction, answer, models, the settings that change a measure),
so a rerun, or a build that failed after this stage, only measures what is new. The model is
loaded only when something is left to measure.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

from longform.ids import content_hash, row_id
from longform.text import paragraphs
from judges.gateau import GateauScorer, Measured, NotScorable, Sample, combine, effective_window  # torch: import lazily
from longform.models import hf_model
from longform.config import GateauConfig
from longform.clock import now
from longform.store import Store

METRICS = ["gateau_hmg", "gateau_hmg_raw", "gateau_cam", "gateau_score", "gateau_rank"]


def scorer_for(cfg: GateauConfig) -> GateauScorer:
    model, tokenizer = hf_model.load_causal_lm(cfg.model, dtype=cfg.dtype)
    short = hf_model.load_causal_lm(cfg.short_model, dtype=cfg.dtype)[0] if cfg.short_model else None
    return GateauScorer(model, tokenizer, short_model=short, window=cfg.window, max_segments=cfg.max_segments,
                        batch_size=cfg.batch_size, max_tokens=cfg.max_tokens, cam_probe=cfg.cam_probe)


def measure_key(sample: Sample, cfg: GateauConfig) -> str:
    """What determines a sample's measures; `alpha`, `top_k`, `ratio` and `batch_size` do not."""
    material = [sample.instruction, list(sample.paragraphs), cfg.model, cfg.short_model,
                effective_window(cfg.window, cfg.max_tokens), cfg.max_tokens, cfg.max_segments, cfg.cam_probe]
    dtype = str(hf_model.torch_dtype(cfg.dtype)).removeprefix("torch.")   # `auto` as this machine resolves it
    if dtype != "float32":   # so measures made in float32 keep the keys they had
        material.append(dtype)
    return content_hash(material)


def candidates(store: Store, run_id: str) -> list[tuple[Sample, str]]:
    """The run's SFT picks, each with its prompt id."""
    return [(Sample(sample_id, instruction, tuple(paragraphs(text))), prompt_id)
            for sample_id, instruction, text, prompt_id in store.sft_picks(run_id)]


def cached_measures(store: Store, picks: list[tuple[Sample, str]], cfg: GateauConfig) -> dict[str, dict]:
    return store.rows_by_key("gateau_measures", [measure_key(sample, cfg) for sample, _ in picks])


@dataclass
class Ranking:
    scores: list[dict]        # `scores` rows
    decisions: list[dict]     # `selections` rows, one per pick
    measures: list[dict]      # new `gateau_measures` rows (the cache)
    summary: dict


def rank(picks: list[tuple[Sample, str]], scorer: Callable[[], GateauScorer], cfg: GateauConfig, *, run_id: str,
         cached: dict[str, dict] | None = None, top_k: int | None = None, ratio: float | None = None) -> Ranking:
    """Reads and writes nothing: scoring can take hours, and the caller decides when to hold the
    database for writing. `scorer` is called (the model loaded) only if a pick is not in `cached`."""
    cached = cached or {}
    started = time.perf_counter()
    loaded: GateauScorer | None = None
    measured: list[Measured] = []
    not_scored: dict[str, str] = {}
    new_rows: list[dict] = []
    for sample, _ in picks:
        key = measure_key(sample, cfg)
        row = cached.get(key)
        if row is None:
            loaded = loaded or scorer()
            row = _measure(loaded, sample, key)
            new_rows.append(row)
        if row["status"] == "measured":
            measured.append(Measured(sample.sample_id, row["log_ppl_long"], row["log_ppl_short"], row["cam"],
                                     row["segments"], row["scored_tokens"]))
        else:
            not_scored[sample.sample_id] = row["reason"]
    seconds = time.perf_counter() - started
    scores = combine(measured, cfg.alpha)
    if top_k is None and ratio is None:
        top_k, ratio = cfg.top_k, cfg.ratio
    keep = top_k if top_k is not None else math.ceil((ratio if ratio is not None else 1.0) * len(measured))
    prompt_of = {sample.sample_id: prompt_id for sample, prompt_id in picks}
    source = f"gateau α={cfg.alpha} window={effective_window(cfg.window, cfg.max_tokens)}"
    score_rows, decisions = [], []
    for sample_id, values in scores.items():
        score_rows += [{"run_id": run_id, "sample_id": sample_id, "metric": metric, "value": value,
                        "source": source, "created_at": now()} for metric, value in values.items()]
        position = int(values["gateau_rank"])
        decisions.append(_decision(run_id, prompt_of[sample_id], sample_id, position <= keep,
                                   f"GATEAU rank {position} of {len(scores)}; keeping the top {keep}", values))
    for sample_id, why in not_scored.items():
        decisions.append(_decision(run_id, prompt_of[sample_id], sample_id, False, f"not scored by GATEAU: {why}",
                                   None))
    tokens = sum(loaded.cost.tokens.values()) if loaded else 0
    summary = {"ranked": len(scores), "selected": min(keep, len(scores)), "not_scored": len(not_scored),
               "measured": len(new_rows), "from_cache": len(picks) - len(new_rows), "seconds": round(seconds, 2),
               "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1) if seconds and tokens else None}
    return Ranking(score_rows, decisions, new_rows, summary)


def _measure(scorer: GateauScorer, sample: Sample, key: str) -> dict:
    row = {"key": key, "sample_id": sample.sample_id, "created_at": now()}
    try:
        m = scorer.measure(sample)
    except NotScorable as e:
        return {**row, "status": "not_scorable", "reason": str(e)}
    return {**row, "status": "measured", "log_ppl_long": m.log_ppl_long, "log_ppl_short": m.log_ppl_short,
            "cam": m.cam, "segments": m.segments, "scored_tokens": m.scored_tokens}


def _decision(run_id: str, prompt_id: str, sample_id: str, selected: bool, reason: str, values: dict | None) -> dict:
    return {"selection_id": row_id(run_id, "gateau", sample_id),
            "run_id": run_id, "purpose": "gateau", "prompt_id": prompt_id, "sample_id": sample_id,
            "rejected_sample_id": None, "selected": selected, "reason": reason, "scores": values,
            "created_at": now()}


def save(store: Store, run_id: str, ranking: Ranking) -> None:
    """Replace the run's earlier GATEAU decisions and scores with these; keep the new measures."""
    store.clear_selection(run_id, "gateau", METRICS)
    store.add_many("gateau_measures", ranking.measures)
    store.add_many("scores", ranking.scores)
    store.add_many("selections", ranking.decisions)
    store.flush()


def select_gateau(store: Store, cfg: GateauConfig, *, run_id: str, top_k: int | None = None,
                  ratio: float | None = None) -> dict:
    """Rank and save with one store (the build's own)."""
    picks = candidates(store, run_id)
    ranking = rank(picks, lambda: scorer_for(cfg), cfg, run_id=run_id, cached=cached_measures(store, picks, cfg),
                   top_k=top_k, ratio=ratio)
    save(store, run_id, ranking)
    return ranking.summary
