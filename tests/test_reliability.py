"""Kill, Ctrl-C, faulty servers, a broken endpoint and planted secrets, against real processes."""

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest

from flows.build import build
from longform.errors import LongformError

from fault_server import FaultServer, hang, model, ok, reset, status
from helpers import descendants, longform, remote_build, rows




def _corpus(db: Path) -> set[tuple]:
    return set(rows(db, "select s.sample_id, s.text, count(c.idx) from samples s join sections c using (sample_id)"
                         " group by all"))


def _wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.slow
def test_kill_9_at_any_moment_then_resume_exactly(tmp_path, prefect):
    env = {"PREFECT_API_URL": prefect}
    concurrency, n_prompts = 4, 16
    with FaultServer(realistic=True, delay_s=0.1) as server:
        clean_cfg = remote_build(tmp_path, server.base_url, n_prompts, name="clean", db_name="clean.duckdb",
                                 endpoint_extra=f"concurrency = {concurrency}")
        clean = longform("build", "--config", str(clean_cfg), cwd=tmp_path, env=env)
        assert clean.wait(timeout=300) == 0, clean.stderr.read()
        clean_requests = len(server.received)
        assert clean_requests == 4 * n_prompts  # plan + 3 sections each

        cfg = remote_build(tmp_path, server.base_url, n_prompts, name="killed",
                           endpoint_extra=f"concurrency = {concurrency}")
        db = tmp_path / "corpus.duckdb"
        kills = [5, 20, 35]  # requests into the build: during plans, mid-sections, near the end
        for k in kills:
            start = len(server.received)
            proc = longform("build", "--config", str(cfg), cwd=tmp_path, env=env)
            _wait_for(lambda: len(server.received) - start >= k or proc.poll() is not None)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert rows(db, "select count(*) from runs where status = 'running'") == [(1,)]
        final = longform("build", "--config", str(cfg), cwd=tmp_path, env=env)
        out, err = final.communicate(timeout=300)
        assert final.returncode == 0, err
        resent = len(server.received) - clean_requests - clean_requests

    assert "resuming interrupted run" in out + err
    # Only what was in flight at each kill may be sent twice: everything answered was kept.
    assert resent <= len(kills) * concurrency, resent
    assert _corpus(db) == _corpus(tmp_path / "clean.duckdb")
    assert rows(db, "select count(*) = count(distinct key) from requests where error is null") == [(True,)]
    statuses = rows(db, "select status, count(*) from runs group by status order by status")
    assert statuses == [("finished", 1), ("interrupted", len(kills))]


@pytest.mark.slow
def test_first_ctrl_c_stops_sending_and_keeps_answers_in_flight(tmp_path, prefect):
    env = {"PREFECT_API_URL": prefect}
    with FaultServer(realistic=True, delay_s=0.5) as server:
        cfg = remote_build(tmp_path, server.base_url, 10, endpoint_extra="concurrency = 2")
        proc = longform("build", "--config", str(cfg), cwd=tmp_path, env=env)
        _wait_for(lambda: len(server.received) >= 3)
        proc.send_signal(signal.SIGINT)
        signalled = time.monotonic()
        out, err = proc.communicate(timeout=60)
        assert time.monotonic() - signalled < 10
        sent_when_stopped = len(server.received)

        db = tmp_path / "corpus.duckdb"
        assert proc.returncode == 130, err
        assert "stopping: waiting for requests in flight" in err
        assert [line for line in err.splitlines() if line.startswith("interrupted:")]
        assert "Traceback" not in err
        assert rows(db, "select status from runs") == [("interrupted",)]
        # Every request the server received was answered and stored: nothing in flight was lost.
        assert rows(db, "select count(*) from requests where error is null") == [(sent_when_stopped,)]
        assert sent_when_stopped < 4 * 10

        again = longform("build", "--config", str(cfg), cwd=tmp_path, env=env)
        assert again.wait(timeout=300) == 0
        assert len(server.received) == 4 * 10  # the rerun sent only what was never answered
    assert rows(db, "select count(*) from samples") == [(10,)]


def test_faulty_server_every_prompt_ends_as_sample_or_failure(tmp_path, prefect):
    # One sample at a time makes arrivals strictly ordered, so each fault hits a known request.
    script = [
        status(500), status(503), model(),          # p000 plan: two 5xx, then answered
        status(429, {"Retry-After": "1"}), model(),  # p000 section 1: rate limited with Retry-After
        reset(), model(),                           # p000 section 2: connection reset
        hang(6.0), model(),                         # p000 section 3: hangs past the 5 s timeout
        ok("Here is my plan: write well."),         # p001 plan: not JSON although JSON was asked for
        # p002: a section cut at its cap, then the model ends the text at once (an answer in the
        # continuation layout), and asked for that section by name it answers nothing: a failure.
        model(), ok("cut off " * 40, finish_reason="length"), ok(""), ok(""),
        status(400),                                # p003 plan: e.g. longer than the context window
        status(502), status(502), status(502),      # p004 plan: retries exhausted
        status(429), model(), model(), model(), model(),  # p005: 429 without Retry-After, then fine
    ]
    with FaultServer(realistic=True) as server:
        server.push(*script)
        cfg = remote_build(tmp_path, server.base_url, 6, extra="max_active_samples = 1",
                           endpoint_extra="concurrency = 2\nmax_attempts = 3")
        summary = asyncio.run(build(config=str(cfg)))
        received = len(server.received)

    db = tmp_path / "corpus.duckdb"
    assert received == len(script)  # every retry accounted for: no storm, nothing skipped
    assert sorted(rows(db, "select prompt_id, stage, reason from failures")) == [
        ("p001", "plan", "unparsable_plan"), ("p002", "write", "empty_content"),
        ("p003", "plan", "http_400"), ("p004", "plan", "http_502")]
    assert sorted(rows(db, "select prompt_id from samples")) == [("p000",), ("p005",)]
    assert summary["lowest_concurrency"] == 1 and summary["http_attempts"] == received
    assert summary["request_errors"] == {"empty_content": 1, "http_400": 1, "http_502": 1}
    assert rows(db, "select status from runs") == [("finished",)]


def test_a_broken_endpoint_stops_the_build_early(tmp_path, prefect):
    with FaultServer(realistic=True) as server:
        server.push(*[status(404)] * 1000)
        cfg = remote_build(tmp_path, server.base_url, 200, endpoint_extra="concurrency = 4")
        with pytest.raises(LongformError, match=r"endpoint looks broken: 20 of the last 20 requests failed \(http_404"):
            asyncio.run(build(config=str(cfg)))
        received = len(server.received)
    assert received <= 20 + 4
    db = tmp_path / "corpus.duckdb"
    assert rows(db, "select status from runs") == [("failed",)]


def test_a_planted_api_key_is_never_written(tmp_path, prefect):
    key = "sk-planted-4f1c9e7b2d"
    with FaultServer(realistic=True) as server:
        cfg = remote_build(tmp_path, server.base_url, 3, endpoint_extra='api_key_env = "LF_TEST_KEY"')
        proc = longform("--debug", "build", "--config", str(cfg), cwd=tmp_path,
                        env={"PREFECT_API_URL": prefect, "LF_TEST_KEY": key})
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert server.authorization and all(a == f"Bearer {key}" for a in server.authorization)

    assert key not in out + err
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.parent.name == "sft" for p in written) and any(p.name == "README.md" for p in written)
    for path in written:
        assert key.encode() not in path.read_bytes(), path
    db = tmp_path / "corpus.duckdb"
    for table in ("runs", "prompts", "requests", "samples", "sections", "failures"):
        assert key not in repr(rows(db, f"select * from {table}")), table
    assert "LF_TEST_KEY" in rows(db, "select config from runs")[0][0]


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except FileNotFoundError:
        return []


@pytest.mark.slow
@pytest.mark.embedded
def test_ctrl_c_stops_the_embedded_server(tmp_path, prefect):
    from helpers import tiny_build

    config = tiny_build(tmp_path)
    proc = longform("build", "--config", str(config), cwd=tmp_path, env={"PREFECT_API_URL": prefect})
    server_pids: list[int] = []

    def serving() -> bool:
        server_pids[:] = [c for c in _children(proc.pid)
                          if "longform.models.llama_server" in open(f"/proc/{c}/cmdline").read()]
        return bool(server_pids) or proc.poll() is not None

    _wait_for(serving)
    time.sleep(3)  # let the build reach its first requests
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert server_pids and not any(os.path.exists(f"/proc/{pid}") for pid in server_pids)
    assert rows(tmp_path / "corpus.duckdb", "select status from runs") == [("interrupted",)]


@pytest.mark.slow
def test_query_and_status_answer_while_a_build_runs(tmp_path, prefect):
    env = {"PREFECT_API_URL": prefect}
    db = tmp_path / "corpus.duckdb"
    with FaultServer(realistic=True, delay_s=0.4) as server:
        cfg = remote_build(tmp_path, server.base_url, 10, endpoint_extra="concurrency = 2")
        proc = longform("build", "--config", str(cfg), cwd=tmp_path, env=env)
        _wait_for(lambda: len(server.received) >= 8)
        query = longform("query", "select count(*) as n from requests", "--db", str(db), "-f", "csv",
                         cwd=tmp_path, env=env)
        q_out, q_err = query.communicate(timeout=60)
        status = longform("status", "--db", str(db), cwd=tmp_path, env=env)
        s_out, s_err = status.communicate(timeout=60)
        still_running = proc.poll() is None
        assert proc.wait(timeout=300) == 0
    assert still_running
    assert query.returncode == 0, q_err
    assert 1 <= int(q_out.splitlines()[1]) < 40
    assert status.returncode == 0, s_err
    assert "running" in s_out and "plan" in s_out

    final = longform("status", "--db", str(db), cwd=tmp_path, env=env)
    out, _ = final.communicate(timeout=60)
    assert "finished" in out and "write" in out
    [(plan_requests,)] = rows(db, "select requests from run_stats where stage = 'plan'")
    assert plan_requests == 10


def test_until_accepted_stops_at_exactly_n_and_resumes_for_free(tmp_path, prefect):
    # Targets alternate 90 and 10 words; the stand-in model writes 60 words a section (32 when asked
    # for fewer), so length control stops at 120 and 32 words: S_l 88.9 for even prompts and 26.7
    # for odd ones, and a floor of 60 accepts exactly the even ones.
    prompts = tmp_path / "prompts.jsonl"
    with FaultServer(realistic=True) as server:
        cfg = remote_build(tmp_path, server.base_url, 10, extra="max_active_samples = 3\ncandidate_budget = 12",
                           endpoint_extra="concurrency = 3")
        prompts.write_text("".join(f'{{"id": "p{i:03d}", "instruction": "Topic {i}.", "target_words": {90 if i % 2 == 0 else 10}}}\n'
                                   for i in range(10)))
        cfg.write_text(cfg.read_text() + "\n[selection]\nmin_length_score = 60\n")
        summary = asyncio.run(build(config=str(cfg), until_accepted=4))
        first_requests = len(server.received)
        again = asyncio.run(build(config=str(cfg), until_accepted=4))
        assert len(server.received) == first_requests  # a rerun walks the same candidates from the cache

    db = tmp_path / "corpus.duckdb"
    assert summary["accepted"] == 4 and again["accepted"] == 4
    kept = rows(db, "select prompt_id from samples where length_score >= 60 order by prompt_id")
    assert kept == [("p000",), ("p002",), ("p004",), ("p006",)]  # no accepted sample beyond N
    [(written,)] = rows(db, "select count(*) from samples")
    assert written == summary["candidates"] <= 12
    data = rows(db, "select count(*) from samples where length_score < 60")
    assert data == [(written - 4,)]
    import pyarrow.parquet as pq
    exported = sum(pq.read_table(p).num_rows for p in (tmp_path / "out" / "remote" / "sft").glob("*.parquet"))
    assert exported == 4


def test_status_estimates_cost_from_configured_prices(tmp_path, prefect):
    with FaultServer(realistic=True) as server:
        cfg = remote_build(tmp_path, server.base_url, 2,
                           endpoint_extra="price_in_per_mtok = 1000000\nprice_out_per_mtok = 0")
        asyncio.run(build(config=str(cfg)))
    db = tmp_path / "corpus.duckdb"
    [(tokens_in,)] = rows(db, "select sum(tokens_in) from run_stats")
    status = longform("status", "--db", str(db), cwd=tmp_path, env={"PREFECT_API_URL": prefect})
    out, err = status.communicate(timeout=60)
    assert status.returncode == 0, err
    assert f"estimated cost: {tokens_in:,.4f}" in out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_kill_9_leaves_no_process_of_the_build_behind(tmp_path):
    # No PREFECT_API_URL: the build runs its own local Prefect server, as a new user's does.
    with FaultServer(realistic=True, delay_s=0.3) as server:
        cfg = remote_build(tmp_path, server.base_url, 8, endpoint_extra="concurrency = 2")
        proc = longform("build", "--config", str(cfg), cwd=tmp_path, env={"PREFECT_API_URL": ""})
        _wait_for(lambda: len(server.received) >= 3 or proc.poll() is not None, timeout=240)
        assert proc.poll() is None, proc.stderr.read()
        spawned = descendants(proc.pid)
        assert any("prefect.server" in Path(f"/proc/{p}/cmdline").read_text() for p in spawned), spawned
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _wait_for(lambda: not any(_alive(p) for p in spawned), timeout=30)


@pytest.mark.slow
def test_a_failed_late_stage_keeps_the_build_and_a_rerun_redoes_only_that_stage(tmp_path, prefect):
    env = {"PREFECT_API_URL": prefect}
    db = tmp_path / "corpus.duckdb"
    with FaultServer(realistic=True) as server:
        cfg = remote_build(tmp_path, server.base_url, 3, name="late")
        cfg.write_text(cfg.read_text() + "\n[gateau]\nenabled = true\nmax_tokens = 128\nwindow = 32\n")
        # The export's folder is taken by a file: only the last stage can fail.
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "late").write_text("in the way")
        first = longform("build", "--config", str(cfg), cwd=tmp_path, env=env)
        _, err = first.communicate(timeout=600)
        sent = len(server.received)
        assert first.returncode == 2, err
        assert "Traceback" not in err
        last = [line for line in err.splitlines() if line.strip()][-1]
        assert last.startswith("error: export failed: NotADirectoryError"), err
        assert "the 3 written samples are stored; run the same command again" in last
        [(status, summary)] = rows(db, "select status, summary from runs")
        summary = json.loads(summary)
        assert status == "failed" and summary["failed_stage"]["stage"] == "export"
        picked = summary["scoring"]["sft_selected"]
        assert picked >= 1 and summary["scoring"]["gateau"]["measured"] == picked
        assert rows(db, "select count(*) from samples") == [(3,)]

        (tmp_path / "out" / "late").unlink()
        again = longform("build", "--config", str(cfg), cwd=tmp_path, env=env)
        out, err = again.communicate(timeout=600)
        assert again.returncode == 0, err
        assert len(server.received) == sent  # writing came from the request cache
    [(status, summary)] = rows(db, "select status, summary from runs where status <> 'failed'")
    gateau = json.loads(summary)["scoring"]["gateau"]
    assert status == "finished" and gateau["measured"] == 0 and gateau["from_cache"] == gateau["ranked"] == picked
    assert any((tmp_path / "out" / "late").rglob("*.parquet"))
