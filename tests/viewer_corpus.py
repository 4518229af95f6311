"""A small corpus written through the store, with every kind of row the viewer shows: AgentWrite and
Self-Lengthen samples, a lineage, judgments, scores, filter checks, selections, a DPO pair,
requests and a failure — and a sample whose text tries to run a script."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from longform.lengths import LengthSpec
from longform.prompts import Prompt
from longform.clock import now
from longform.store import Store

SCRIPT = "<script>window.pwned = 1</script>"
RUN = "r-view"


def write_corpus(db: Path) -> dict:
    with Store.open(db) as store:
        store.start_run(RUN, "viewer", {"build": {"name": "viewer"}}, None, None)
        store.add_prompts([Prompt("p-tea", f"Write about 300 words on tea. {SCRIPT}"),
                           Prompt("p-moon", "写一篇不超过200字的短文，介绍月亮。")], "test")
        spec = LengthSpec("about", 300, 300, "words", "about 300 words", "instruction")
        for i, (writer, words) in enumerate((("agentwrite", 310), ("agentwrite", 150), ("self_lengthen", 280))):
            sid = f"s-{i}"
            text = " ".join(["tea"] * (words - 1)) + (f" {SCRIPT}" if i == 0 else " end.")
            store.add("samples", {"sample_id": sid, "prompt_id": "p-tea", "run_id": RUN, "writer": writer, "model": "m",
                                  "sample_index": i, "text": text, "words": words, "length_counter": "lbw_words",
                                  **spec.columns(), "length_score": spec.score(words), "bound_ok": None,
                                  "length_stop": "in_band" if writer == "agentwrite" else None,
                                  "n_sections": 2, "plan_source": "json", "tokens_out": words,
                                  "created_at": now() + timedelta(seconds=i)})   # distinct: the viewer sorts by it
            store.add("selections", {"selection_id": f"sel-{i}", "run_id": RUN, "purpose": "sft", "prompt_id": "p-tea",
                                     "sample_id": sid, "selected": i != 1, "reason": "passed" if i != 1 else "S_l too low",
                                     "scores": {"length_score": spec.score(words)}, "created_at": now()})
            store.add("scores", {"run_id": RUN, "sample_id": sid, "metric": "quality", "value": 40.0 + 10 * i,
                                 "source": "judge · quality", "created_at": now()})
        for idx, (planned, written, finish, elided) in enumerate(((150, 160, "stop", False), (150, 150, "length", True))):
            store.add("sections", {"sample_id": "s-0", "idx": idx, "main_point": f"point {idx} {SCRIPT}",
                                   "planned_words": planned, "budget_words": planned - 5 * idx, "words": written,
                                   "text": f"Section {idx} text.", "length_counter": "lbw_words",
                                   "continuations": idx, "finish_reason": finish, "elided": elided})
        for k, (parent, role, before, after, accepted) in enumerate(
                ((None, "generator", 0, 120, True), ("st-0", "extender", 120, 200, True), ("st-1", "extender", 200, 280, True))):
            store.add("lengthen_steps", {"step_id": f"st-{k}", "run_id": RUN, "prompt_id": "p-tea", "sample_id": "s-2",
                                         "parent_step_id": parent, "iteration": 1, "round": k, "role": role,
                                         "words_before": before, "words_after": after, "length_counter": "lbw_words",
                                         "verdicts": {"ends_with_punctuation": "pass"}, "accepted": accepted,
                                         "reason": "grew", "finish_reason": "stop", "text": "t", "created_at": now()})
        store.add("judgments", {"judgment_id": "j-r", "run_id": RUN, "kind": "rubric", "judge_model": "m",
                                "prompt_id": "p-tea", "sample_id": "s-0", "scores": {"clarity": 3}, "quality": 50.0,
                                "expected_quality": 47.5, "parse_status": "json", "raw": f'{{"clarity": 3}} {SCRIPT}',
                                "signal": "logprobs", "created_at": now()})
        for first, second, p in (("s-0", "s-1", 0.8), ("s-1", "s-0", 0.6)):
            store.add("judgments", {"judgment_id": f"j-{first}", "run_id": RUN, "kind": "pairwise", "judge_model": "m",
                                    "prompt_id": "p-tea", "sample_id": first, "other_sample_id": second, "winner": "A",
                                    "p_first": p, "parse_status": "letter", "raw": "A", "signal": "logprobs",
                                    "created_at": now()})
        store.add("filter_checks", {"run_id": RUN, "subject": "sample", "subject_id": "s-1", "filter": "min_length_score",
                                    "passed": False, "reason": "S_l 33.3 < 50", "created_at": now()})
        store.add("filter_checks", {"run_id": RUN, "subject": "sample", "subject_id": "s-0", "filter": "min_length_score",
                                    "passed": True, "created_at": now()})
        store.add("selections", {"selection_id": "dpo-tea", "run_id": RUN, "purpose": "dpo", "prompt_id": "p-tea",
                                 "sample_id": "s-0", "rejected_sample_id": "s-1", "selected": True,
                                 "reason": "chosen by quality, margin 10.00",
                                 "scores": {"ranking": "quality", "margin": 10.0}, "created_at": now()})
        store.add_request({"request_id": "q-1", "key": "k1", "run_id": RUN, "stage": "write", "model": "m",
                           "sample_id": "s-0", "prompt_id": "p-tea", "section": 0, "endpoint": "http://127.0.0.1:1/v1",
                           "response_text": "x", "finish_reason": "stop", "tokens_in": 100, "tokens_out": 200,
                           "latency_s": 1.5, "attempts": 2, "created_at": now()}, {"messages": []})
        store.add("failures", {"failure_id": "f-1", "run_id": RUN, "stage": "plan", "prompt_id": "p-moon",
                               "sample_id": "s-x", "reason": "unparsable_plan", "detail": f"answer: {SCRIPT}",
                               "created_at": now()})
        store.add("length_fits", {"run_id": RUN, "judge_model": "m", "kind": "pairwise", "status": "fitted",
                                   "n": 2, "phi": 0.8, "ci_low": 0.1, "ci_high": 1.5, "scale": 80.0, "created_at": now(),
                                   "detail": {"position": {"estimate": 0.9, "ci": [0.2, 1.6], "pair_bias": 0.2},
                                              "graded": 2, "longer_wins": {"raw": 0.6, "lc": 0.5, "pairs": 2}}})
        store.finish_run(RUN, "finished", {"samples": 3})
    return {"run": RUN, "samples": ["s-0", "s-1", "s-2"]}
