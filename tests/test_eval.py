"""`longform eval`: several models on the same prompts, in one command, over real HTTP and the
embedded model's own weights; scores, paired differences, storage, reuse and the report."""

import json
import re

import pytest

from fault_server import FaultServer, ok, status
from helpers import longform, rows
from judges import length_eval
from judges.length_eval import paired, per_answer, summarize, verdict
from longform.errors import LongformError
from longform.prompts import load_prompt_file

PROMPTS = [
    {"id": "en-30", "instruction": "Write a 30-word note about a lighthouse."},
    {"id": "en-at-most", "instruction": "In no more than 40 words, describe a harbour at dawn."},
    {"id": "zh-20", "instruction": "写一篇20字的短文，介绍月亮。"},
]


def exact_writer(body: dict) -> dict:
    """A stand-in model that writes exactly what each prompt asks (distinct words, or characters)."""
    instruction = body["messages"][-1]["content"]
    if "月亮" in instruction:
        return ok("月" * 10 + "亮" * 10 + "。")
    n = 30 if "30-word" in instruction else 36
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ok(" ".join(f"w{letters[i // 26]}{letters[i % 26]}" for i in range(n)) + ".")


def _eval(tmp_path, *args):
    proc = longform("eval", "--prompts", str(tmp_path / "prompts.jsonl"), "--db", str(tmp_path / "e.duckdb"),
                    "--out", str(tmp_path / "report"), *args, cwd=tmp_path)
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


@pytest.fixture
def prompts_file(tmp_path):
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in PROMPTS),
                                            encoding="utf-8")
    return tmp_path / "prompts.jsonl"


@pytest.mark.slow
@pytest.mark.embedded
def test_two_models_one_command_stored_compared_and_reused(tmp_path, prompts_file):
    with FaultServer("exact") as server:
        server.answer = exact_writer
        args = ("--model", "embedded", "--endpoint", f"exact@{server.base_url}", "--max-new-tokens", "8",
                "--batch-size", "2")
        code, out, err = _eval(tmp_path, *args)
        assert code == 0, err
        sent = len(server.received)
        assert sent == 3

        db = tmp_path / "e.duckdb"
        [(eval_id,)] = rows(db, "select distinct eval_id from evals")
        assert rows(db, "select model, backend from evals order by model") == [("embedded", "transformers"),
                                                                                ("exact", "endpoint")]
        answers = {(m, p): (w, s, f, t, b) for m, p, w, s, f, t, b in rows(
            db, "select model, prompt_id, words, length_score, finish_reason, tokens_out, bound_ok from eval_answers")}
        assert len(answers) == 6
        # The stand-in writes what was asked: S_l 100 where a length is named, the bound kept.
        assert answers[("exact", "en-30")][:3] == (30, 100.0, "stop")
        assert answers[("exact", "zh-20")][:2] == (20, 100.0)
        assert answers[("exact", "en-at-most")][4] is True
        # The embedded model, capped at 8 tokens, cannot reach 20 words: stopped by the cap, scored low.
        for prompt in ("en-30", "en-at-most", "zh-20"):
            words, score, finish, tokens, _ = answers[("embedded", prompt)]
            assert tokens <= 8 and score < 60
            assert finish == "length" and tokens == 8 or finish == "stop"

        pairs = {(a, b, m): (n, d, lo, hi) for a, b, m, n, d, lo, hi in rows(
            db, "select model_a, model_b, metric, n, mean_diff, ci_low, ci_high from eval_pairs")}
        n, diff, low, high = pairs[("exact", "embedded", "length_score")]
        assert n == 3 and diff > 40 and low > 0   # the paired interval lies above zero
        summary = json.loads(rows(db, "select summary from evals where model = 'exact'")[0][0])
        assert summary["mean_length_score"] == 100.0 and summary["eos_rate"] == 1.0 and summary["answered"] == 3

        report = (tmp_path / "report" / "report.md").read_text()
        assert "| exact | endpoint |" in report and "| embedded | transformers |" in report
        assert "exact | embedded | S_l | 3 |" in report
        assert (tmp_path / "report" / "asked_vs_written.png").stat().st_size > 1000

        # The same evaluation again generates nothing: answers come back by their keys.
        code, out, err = _eval(tmp_path, *args)
        assert code == 0, err
        assert len(server.received) == sent
        assert re.search(r"0 generated, 6\s+reused", out), out
        assert rows(db, "select count(distinct eval_id), count(*) from eval_answers") == [(2, 12)]


def test_failed_request_is_a_row_and_asked_again(tmp_path, prompts_file):
    with FaultServer("exact") as server:
        server.answer = exact_writer
        server.push(status(400))   # the first request is refused for good (a 400 is not retried)
        code, out, err = _eval(tmp_path, "--endpoint", server.base_url)
        assert code == 0, err
        db = tmp_path / "e.duckdb"
        failed = rows(db, "select prompt_id, error, text, words from eval_answers where error is not null")
        assert len(failed) == 1 and "400" in failed[0][1] and failed[0][2:] == ("", 0)
        summary = json.loads(rows(db, "select summary from evals")[0][0])
        assert summary["failed"] == 1 and summary["answered"] == 2
        # A rerun asks only for what failed.
        code, out, err = _eval(tmp_path, "--endpoint", server.base_url)
        assert code == 0, err
        assert len(server.received) == 4


def test_bad_endpoint_spec_is_one_line(tmp_path, prompts_file):
    code, out, err = _eval(tmp_path, "--endpoint", "localhost:8000")
    assert code == 2 and err.startswith("error: --endpoint 'localhost:8000'") and "Traceback" not in err


# --- the statistics, on rows whose answers are known ---------------------------------------------

def _row(prompt, score, finish="stop", repeated=False, quality=None, error=None):
    return {"prompt_id": prompt, "length_score": score, "finish_reason": finish, "repeated_ngram": repeated,
            "repeated_paragraphs": False, "quality": quality, "error": error, "words": int(score) + 1,
            "required_words": 100, "bound_ok": None}


def test_paired_difference_is_per_prompt():
    base = [_row(f"p{i}", s) for i, s in enumerate([10, 50, 90, 30, 70, 20, 60, 40])]
    better = [_row(r["prompt_id"], r["length_score"] + 12 + (i % 3)) for i, r in enumerate(base)]
    pair = paired(better, base, "length_score")
    # Unpaired, the two samples overlap widely; paired, every prompt gained 12-14 points.
    assert pair["n"] == 8 and 12 <= pair["ci_low"] <= pair["mean_diff"] <= pair["ci_high"] <= 14
    assert verdict(pair) == "higher"
    noise = [_row(r["prompt_id"], r["length_score"] + (5 if i % 2 else -5)) for i, r in enumerate(base)]
    assert verdict(paired(noise, base, "length_score")) == "not significant"
    # Only prompts both answered count; a failed answer is neither side's.
    partial = better[:5] + [_row("p5", 0, error="timeout")]
    assert paired(partial, base, "length_score")["n"] == 5


def test_summary_counts_failures_and_rates():
    answers = [_row("a", 100), _row("b", 50, finish="length", repeated=True), _row("c", 0, error="HTTP 500")]
    s = summarize(answers)
    assert (s["n"], s["answered"], s["failed"]) == (3, 2, 1)
    assert s["mean_length_score"] == 75 and s["eos_rate"] == 0.5 and s["repetition_rate"] == 0.5
    assert per_answer(answers[2], "length_score") is None


def test_longbench_write_format(tmp_path):
    path = tmp_path / "lbw.jsonl"
    path.write_text('{"prompt": "Write a story about a fox.", "length": 500, "type": "Literature"}\n'
                    '{"prompt": "写一篇文章。", "length": 2000, "type": "Essay"}\n', encoding="utf-8")
    [(fox, spec), (zh, zh_spec)] = length_eval.eval_prompts(path)
    assert (fox.prompt_id, spec.kind, spec.aim, fox.meta) == ("lbw-1", "exact", 500, {"type": "Literature"})
    assert (zh_spec.aim, zh_spec.unit) == (2000, "zh_chars")
    path.write_text('{"prompt": "Write.", "length": "long"}\n', encoding="utf-8")
    with pytest.raises(LongformError, match=r"lbw.jsonl:1: a LongBench-Write line needs"):
        load_prompt_file(path)


def test_budget_leaves_room_to_overshoot():
    [(_, exact), (_, at_most), _] = [(p, s) for p, s in length_eval.eval_prompts(
        _write(PROMPTS, "configs-budget.jsonl"))]
    assert length_eval.budget(exact, 1.5, None) == int(30 * 1.5 * 1.5) + 64
    assert length_eval.budget(at_most, 1.5, None) == int(40 * 1.5 * 1.5) + 64
    assert length_eval.budget(exact, 1.5, 50) == 50


def _write(prompts, name):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / name
    path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in prompts), encoding="utf-8")
    return path


def test_quality_from_the_rubric_judge(tmp_path, prompts_file):
    """--quality: S_q per answer from the rubric judge on the config's [judges] endpoints (a stand-in
    that rates the short writer's answers low), its mean in the summary, its paired difference stored."""
    def judge(body):
        text = body["messages"][-1]["content"]
        rating = 2 if "Too short." in text else 5
        return ok(json.dumps({d: rating for d in ("relevance", "accuracy", "coherence", "clarity",
                                                  "breadth_and_depth", "reading_experience")}))

    def short_writer(body):
        return ok("Too short.")

    with FaultServer("exact") as writer, FaultServer("short") as short, FaultServer("judge") as judge_server:
        writer.answer, short.answer, judge_server.answer = exact_writer, short_writer, judge
        config = tmp_path / "judge.toml"
        config.write_text(f'[judges]\nverdicts = "text"\n\n[[judges.endpoints]]\nkind = "openai"\n'
                          f'base_url = "{judge_server.base_url}"\nmodel = "judge"\n')
        code, out, err = _eval(tmp_path, "--endpoint", f"short@{short.base_url}",
                               "--endpoint", f"exact@{writer.base_url}", "--quality", "-c", str(config))
        assert code == 0, err
        assert len(judge_server.received) == 6
        db = tmp_path / "e.duckdb"
        quality = dict(rows(db, "select model || '/' || prompt_id, quality from eval_answers"))
        assert quality["exact/en-30"] == 100.0 and quality["short/en-30"] == 25.0
        assert {j for (j,) in rows(db, "select distinct judge_model from eval_answers")} == {"judge"}
        [(n, diff, low)] = rows(db, "select n, mean_diff, ci_low from eval_pairs where metric = 'quality'")
        assert n == 3 and low > 0
