"""The Prefect `build` flow end to end: embedded model, DuckDB file, Prefect's test harness."""

import asyncio

import duckdb
import pytest
from datasets import load_dataset
from prefect.testing.utilities import prefect_test_harness

from flows.build import build
from longform.errors import LongformError

from helpers import tiny_build


@pytest.fixture(scope="module")
def prefect():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def _rows(db, sql):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_build_stores_everything_and_a_rerun_sends_nothing(prefect, tmp_path):
    config = tiny_build(tmp_path)
    db = tmp_path / "corpus.duckdb"
    summary = asyncio.run(build(config=str(config)))

    # Every prompt ends as a sample or a failure row with a reason.
    [(samples,)] = _rows(db, "select count(*) from samples")
    [(failures,)] = _rows(db, "select count(*) from failures")
    assert samples >= 1 and samples + failures == 2
    assert summary["samples"] == samples and summary["new_samples"] == samples
    assert summary["requests_sent"] > 0 and summary["cache_hits"] == 0

    [(run_id, status, flow_run_id, config_json)] = _rows(
        db, "select run_id, status, prefect_flow_run_id, config from runs")
    assert status == "finished" and flow_run_id and run_id == summary["run_id"]
    assert '"kind":"embedded"' in config_json.replace(" ", "")

    zh = _rows(db, "select required_words, required_source, length_counter from samples where prompt_id = 'zh'")
    assert zh in ([], [(50, "instruction", "lbw_words")])
    for sample_id, score, required in _rows(db, "select sample_id, length_score, required_words from samples"):
        sections = _rows(db, f"select idx, words, planned_words from sections where sample_id = '{sample_id}' order by idx")
        assert [s[0] for s in sections] == list(range(len(sections)))
        assert sum(s[2] for s in sections) == required
        assert 0 <= score <= 100
    [(sent,)] = _rows(db, "select count(*) from requests where error is null")
    assert sent == summary["requests_sent"]

    data = load_dataset("parquet", data_files=str(tmp_path / "out" / "tiny" / "sft.parquet"))["train"]
    assert len(data) == samples
    assert [m["role"] for m in data[0]["messages"]] == ["user", "assistant"]
    assert data[0]["sample_id"] in {r[0] for r in _rows(db, "select sample_id from samples")}
    card = (tmp_path / "out" / "tiny" / "README.md").read_text()
    assert f"| rows | {samples} " in card and "lbw_words" in card

    again = asyncio.run(build(config=str(config)))
    assert again["requests_sent"] == 0 and again["cache_hits"] == summary["requests_sent"]
    assert again["samples"] == samples and again["new_samples"] == 0
    assert _rows(db, "select count(*) from samples") == [(samples,)]
    assert _rows(db, "select count(*) from runs where status = 'finished'") == [(2,)]

    # A known prompt id with new text is refused rather than paired with old samples on export.
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(prompts.read_text().replace("a rainy morning", "a sunny evening"))
    with pytest.raises(LongformError, match="prompt id 'en' is already in .* with a different instruction"):
        asyncio.run(build(config=str(config)))
    assert _rows(db, "select count(*) from samples") == [(samples,)]
