"""The Prefect `build` flow end to end: embedded model, DuckDB file, Prefect's test harness."""

import asyncio

import pytest
from datasets import load_dataset

from flows.build import build
from longform.errors import LongformError

from fault_server import FaultServer
from helpers import remote_build, rows, tiny_build




@pytest.mark.slow
@pytest.mark.embedded
def test_build_stores_everything_and_a_rerun_sends_nothing(prefect, tmp_path):
    config = tiny_build(tmp_path)
    db = tmp_path / "corpus.duckdb"
    summary = asyncio.run(build(config=str(config)))

    # Every prompt ends as a sample or a failure row with a reason.
    [(samples,)] = rows(db, "select count(*) from samples")
    [(failures,)] = rows(db, "select count(*) from failures")
    assert samples >= 1 and samples + failures == 2
    assert summary["samples"] == samples and summary["new_samples"] == samples
    assert summary["requests_sent"] > 0 and summary["cache_hits"] == 0

    [(run_id, status, flow_run_id, config_json)] = rows(
        db, "select run_id, status, prefect_flow_run_id, config from runs")
    assert status == "finished" and flow_run_id and run_id == summary["run_id"]
    assert '"kind":"embedded"' in config_json.replace(" ", "")

    # Both prompts end as a sample or a failure (what the 135M model writes is not guaranteed;
    # test_stand_in_build_reads_lengths_and_exports asserts the stored spec and export exactly).
    ended = {r[0] for r in rows(db, "select prompt_id from samples union select prompt_id from failures")}
    assert ended == {"en", "zh"}
    for sample_id, score, required, stop in rows(
            db, "select sample_id, length_score, required_words, length_stop from samples"):
        sections = rows(db, f"select idx, words, planned_words from sections where sample_id = '{sample_id}' order by idx")
        assert [s[0] for s in sections] == list(range(len(sections)))
        if stop != "stopped_early_over_band":   # the plan's budgets add up to the aim
            assert sum(s[2] for s in sections) == required, stop
        assert 0 <= score <= 100
    [(sent,)] = rows(db, "select count(*) from requests where error is null")
    assert sent == summary["requests_sent"]

    # Every sample gets a selection decision with its reason; the export holds the selected ones.
    decisions = rows(db, "select sample_id, selected, reason from selections where purpose = 'sft'")
    assert len(decisions) == samples and all(reason for _, _, reason in decisions)
    selected = {s for s, chosen, _ in decisions if chosen}
    sft_dir = tmp_path / "out" / "tiny" / "sft"
    if selected:
        data = load_dataset("parquet", data_dir=str(sft_dir))
        assert set().union(*(set(split["sample_id"]) for split in data.values())) == selected
        first = next(iter(data.values()))[0]
        assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
    else:
        assert not sft_dir.exists()
    card = (tmp_path / "out" / "tiny" / "README.md").read_text()
    assert "| SFT rows" in card and "lbw_words" in card and summary["run_id"] in card

    again = asyncio.run(build(config=str(config)))
    assert again["requests_sent"] == 0 and again["cache_hits"] == summary["requests_sent"]
    assert again["samples"] == samples and again["new_samples"] == 0
    assert rows(db, "select count(*) from samples") == [(samples,)]
    assert rows(db, "select count(*) from runs where status = 'finished'") == [(2,)]

    # A known prompt id with new text is refused rather than paired with old samples on export.
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(prompts.read_text().replace("a rainy morning", "a sunny evening"))
    with pytest.raises(LongformError, match="prompt id 'en' is already in .* with a different instruction"):
        asyncio.run(build(config=str(config)))
    assert rows(db, "select count(*) from samples") == [(samples,)]


def test_stand_in_build_reads_lengths_and_exports(prefect, tmp_path):
    """A deterministic stand-in model: every prompt is written, so the length specs stored on the
    samples and the export are asserted exactly."""
    with FaultServer(realistic=True) as server:
        config = remote_build(tmp_path, server.base_url, 1, name="specs",
                              extra="[selection]\nmin_length_score = 0\n[filters]\nrequired = []")
        prompts = tmp_path / "prompts.jsonl"
        prompts.write_text('{"id": "zh", "instruction": "写一篇不超过120字的短文，介绍月亮。"}\n'
                           '{"id": "en", "instruction": "Write between 100 and 140 words about tea."}\n'
                           '{"id": "file", "instruction": "Write about rivers.", "min_words": 90}\n', encoding="utf-8")
        summary = asyncio.run(build(config=str(config)))
    db = tmp_path / "corpus.duckdb"
    specs = rows(db, "select prompt_id, length_kind, length_low, length_high, length_unit, required_words,"
                     " required_source, length_span, bound_ok is not null, length_stop is not null"
                     " from samples order by prompt_id")
    assert specs == [("en", "range", 100, 140, "words", 120, "instruction", "between 100 and 140 words", True, True),
                     ("file", "at_least", 90, None, "words", 99, "min_max_words", None, True, True),
                     ("zh", "at_most", None, 120, "zh_chars", 108, "instruction", "不超过120字", True, True)]
    assert summary["samples"] == 3
    sft = tmp_path / "out" / "specs" / "sft"
    exported = {p.name for p in sft.iterdir()}
    assert exported and exported <= {"train.parquet", "test.parquet"}
