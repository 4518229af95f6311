"""The selection policy's decisions and reasons."""

from longform.checks import Check
from judges.selection import Scored, select
from longform.config import SelectionConfig

REQUIRED = ["min_length_score", "repeated_paragraphs"]


def _decisions(samples, **cfg):
    rows = select(samples, SelectionConfig(**cfg), REQUIRED, run_id="r")
    return ({r["sample_id"]: r for r in rows if r["purpose"] == "sft"},
            {r["prompt_id"]: r for r in rows if r["purpose"] == "dpo"})


def test_dpo_pairs_take_the_best_long_enough_candidate_and_the_worst_other():
    samples = [
        Scored("a", "p1", 90, scores={"lc_quality": 70, "quality": 60}),
        Scored("b", "p1", 90, scores={"lc_quality": 50, "quality": 75}),
        Scored("c", "p1", 40, scores={"lc_quality": 80, "quality": 80}),   # best, but too short
        Scored("d", "p2", 95, scores={"lc_quality": 60}),
        Scored("e", "p2", 95, scores={"lc_quality": 58}),
        Scored("f", "p3", 95, scores={"lc_quality": 58}),
        Scored("g", "p4", 95, scores={"quality": 70}),                      # no length fit: raw score
        Scored("h", "p4", 95, scores={"quality": 20}),
        Scored("i", "p5", 95, scores={"lc_quality": 90}, checks=[Check("repeated_paragraphs", False, "x")]),
        Scored("j", "p5", 95, scores={"lc_quality": 10}),
    ]
    _, dpo = _decisions(samples, dpo_min_length_score=80, dpo_margin=5)
    p1 = dpo["p1"]
    assert p1["selected"] and (p1["sample_id"], p1["rejected_sample_id"]) == ("a", "b")
    assert p1["scores"]["ranking"] == "lc_quality" and p1["scores"]["margin"] == 20
    assert not dpo["p2"]["selected"] and "margin 2.00 < 5" in dpo["p2"]["reason"]
    assert not dpo["p3"]["selected"] and dpo["p3"]["reason"] == "fewer than 2 candidates"
    assert dpo["p4"]["selected"] and dpo["p4"]["scores"]["ranking"] == "quality"
    # A candidate failing a required filter is never chosen, but may be rejected.
    assert not dpo["p5"]["selected"] and dpo["p5"]["sample_id"] == "j" and dpo["p5"]["rejected_sample_id"] == "i"


def test_sft_keeps_what_passes_required_filters_and_the_quality_floor():
    samples = [
        Scored("ok", "p", 90, checks=[Check("meta_words", False, "not required")], scores={"lc_quality": 70}),
        Scored("rep", "p", 90, checks=[Check("repeated_paragraphs", False, "paragraphs 1 and 2 are 95% similar")],
               scores={"lc_quality": 70}),
        Scored("low", "p", 90, scores={"lc_quality": 30}),
        Scored("unjudged", "p", 90),
    ]
    sft, _ = _decisions(samples, min_lc_quality=50)
    assert sft["ok"]["selected"]
    assert not sft["rep"]["selected"] and sft["rep"]["reason"].startswith("repeated_paragraphs: paragraphs 1 and 2")
    assert not sft["low"]["selected"] and "LC quality 30.0 < 50" in sft["low"]["reason"]
    assert not sft["unjudged"]["selected"] and "no length-controlled quality" in sft["unjudged"]["reason"]
    sft, _ = _decisions(samples)
    assert {s for s, r in sft.items() if r["selected"]} == {"ok", "low", "unjudged"}
