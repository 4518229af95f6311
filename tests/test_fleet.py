"""Several endpoints: routing by sample, failover when one dies or fails, and the request store's layout.

Every server here is a real HTTP server on loopback (fault_server.py) whose answers are a function
of the request body, so a build's samples do not depend on which server answered.
"""

import asyncio
import json
import re
import threading
import time
from pathlib import Path

import duckdb

from flows.build import build
from longform.engine import ChatRequest
from longform.engine.cache_key import request_key
from longform.store.schema import APPEND_TABLES, MIGRATIONS
from longform.store import Store

from conftest import make_engine
from fault_server import FaultServer, status
from helpers import fleet_build, rows


def _corpus(db: Path) -> set[tuple]:
    return set(rows(db, "select s.sample_id, s.text, count(c.idx) from samples s join sections c using (sample_id)"
                         " group by all"))


def _topic(body: dict) -> str:
    return re.search(r"topic \d+", json.dumps(body)).group(0)


def test_every_request_of_a_sample_reaches_one_server_and_a_rerun_sends_nothing(tmp_path, prefect):
    with FaultServer(realistic=True) as a, FaultServer(realistic=True) as b, FaultServer(realistic=True) as c:
        cfg = fleet_build(tmp_path, [a.base_url, b.base_url, c.base_url], 12, name="fleet")
        summary = asyncio.run(build(config=str(cfg)))
        assert summary["samples"] == 12
        # Server-side evidence: each prompt's requests (plan + 3 sections) all reached one server.
        seen = [{_topic(body) for body in server.received} for server in (a, b, c)]
        assert sum(map(len, seen)) == 12 and set.union(*seen) == {f"topic {i}" for i in range(12)}
        assert all(len(server.received) == 4 * len(topics) for server, topics in zip((a, b, c), seen))
        assert sum(1 for topics in seen if topics) >= 2  # the pool was used, not one server
        sent = sum(len(s.received) for s in (a, b, c))
        again = asyncio.run(build(config=str(cfg)))
        assert again["requests_sent"] == 0 and sum(len(s.received) for s in (a, b, c)) == sent

    db = tmp_path / "fleet.duckdb"
    # The requests say where they went and what they were for.
    per_sample = rows(db, "select sample_id, count(distinct endpoint), count(*), list(section order by section)"
                          " from requests where stage in ('plan', 'write') group by sample_id")
    assert len(per_sample) == 12 and all(n_endpoints == 1 and n == 4 for _, n_endpoints, n, _ in per_sample)
    assert all(sections == [0, 1, 2, None] for *_, sections in per_sample)
    stats = rows(db, "select endpoint, state, requests from endpoint_stats where pool = 'writers' and run_id = ?",
                 [summary["run_id"]])
    assert sorted(url for url, _, _ in stats) == sorted(s.base_url for s in (a, b, c))
    assert all(state == "up" for _, state, _ in stats) and sum(n for *_, n in stats) == 48
    from test_cli import run

    shown = run("status", "--db", str(db), "--run", summary["run_id"], cwd=tmp_path, env_home=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "endpoints" in shown.stdout and all(s.base_url in shown.stdout for s in (a, b, c)), shown.stdout


def test_a_server_killed_mid_build_moves_its_samples_and_the_corpus_is_the_same(tmp_path, prefect):
    # 24 prompts, so that the killed server has samples left to be asked for after its in-flight
    # requests fail: it is taken out on its third failure in a row (engine/health.py), and which
    # samples hash to it depends on their ids (with 12, one config change left it only two).
    n = 24
    with FaultServer(realistic=True) as solo:
        reference = asyncio.run(build(config=str(fleet_build(tmp_path, [solo.base_url], n, name="reference"))))
    assert reference["samples"] == n

    with FaultServer(realistic=True, delay_s=0.05) as a, FaultServer(realistic=True, delay_s=0.05) as b, \
            FaultServer(realistic=True, delay_s=0.05) as c:
        cfg = fleet_build(tmp_path, [a.base_url, b.base_url, c.base_url], n, name="killed")

        def kill_b_when_busy() -> None:
            # Bounded: if b gets fewer than three requests, it is killed anyway and the build still ends.
            deadline = time.monotonic() + 60
            while len(b.received) < 3 and time.monotonic() < deadline:
                time.sleep(0.005)
            b.kill()

        killer = threading.Thread(target=kill_b_when_busy, daemon=True)
        killer.start()
        summary = asyncio.run(build(config=str(cfg)))
        killer.join(timeout=5)
        assert b.dead and summary["samples"] == n and not summary["failures"], summary

    db = tmp_path / "killed.duckdb"
    assert _corpus(db) == _corpus(tmp_path / "reference.duckdb")
    assert rows(db, "select count(*) = count(distinct key) from requests where error is null") == [(True,)]
    assert rows(db, "select count(*) from requests where error is not null") == [(0,)]
    [(state, failed, reason)] = rows(db, "select state, failed_attempts, reason from endpoint_stats where endpoint = ?",
                                     [b.base_url])
    assert state == "down" and failed >= 1 and reason, (state, failed, reason)


def test_an_endpoint_answering_500s_is_taken_out_and_named(tmp_path, prefect):
    with FaultServer(realistic=True) as a, FaultServer(realistic=True) as b, FaultServer(realistic=True) as bad:
        bad.fallback = status(500)
        # Samples start a few at a time, so new ones keep being placed while the bad server is up.
        cfg = fleet_build(tmp_path, [a.base_url, b.base_url, bad.base_url], 30, name="five00",
                          extra="max_active_samples = 3")
        summary = asyncio.run(build(config=str(cfg)))
        assert summary["samples"] == 30 and not summary["failures"]
        # It went down after a few failed attempts, not after a window of them.
        assert 1 <= len(bad.received) <= 6, len(bad.received)

    db = tmp_path / "five00.duckdb"
    [(state, failed, errors, reason)] = rows(db, "select state, failed_attempts, errors, reason from endpoint_stats"
                                                 " where endpoint = ?", [bad.base_url])
    assert state == "down" and failed == len(bad.received) and json.loads(errors) == {} and "http_500" in reason, \
        (state, failed, errors, reason, len(bad.received))
    answered_by = {url for (url,) in rows(db, "select distinct endpoint from requests where error is null")}
    assert answered_by <= {a.base_url, b.base_url}
    assert summary["endpoints"][f"writers {bad.base_url}"]["state"] == "down"


def test_a_database_from_the_previous_release_migrates_and_answers_from_its_cache(tmp_path):
    db = tmp_path / "old.duckdb"
    # A v7 database, as the release before fleets wrote it: the whole request JSON in every row.
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE schema_version (version INTEGER, applied_at TIMESTAMPTZ)")
    for number, migration in enumerate(MIGRATIONS[:7], start=1):
        con.execute(migration)
        con.execute("INSERT INTO schema_version VALUES (?, now())", [number])
    with FaultServer() as server:
        from longform.engine import Endpoint

        endpoint = Endpoint(server.base_url, "fault-model", "json_schema", 8192)
        req = ChatRequest(stage="write", messages=[{"role": "user", "content": "Write. " * 400}], max_tokens=32)
        with Store.open(tmp_path / "scratch.duckdb") as scratch:
            probe = make_engine(endpoint, scratch)
            body = probe.body(req)
            asyncio.run(probe.close())
        key = request_key(body, sample_index=0, template="")
        old_columns = APPEND_TABLES["requests"][:14]
        con.execute(f"INSERT INTO requests ({', '.join(old_columns)}) VALUES (?, ?, 'r-old', 'write', 'fault-model', ?,"
                    " 'an old answer', 'stop', 5, 3, 0.1, 1, NULL, now())", ["req-old", key, json.dumps(body)])
        con.close()

        with Store.open(db) as store:
            engine = make_engine(endpoint, store)
            answer = asyncio.run(engine.complete(req))
            assert answer.cached and answer.text == "an old answer" and server.received == []
            [(version,)] = store.query("select max(version) from schema_version")[1]
            assert version == len(MIGRATIONS)
            assert store.request_document("req-old")["messages"] == req.messages  # old rows read as before
            # A new request stores its long text once, and reads back as sent.
            fresh = ChatRequest(stage="write", messages=[{"role": "user", "content": "Other. " * 400}], max_tokens=32,
                                sample_id="s-1", prompt_id="p-1", section=2)
            asyncio.run(engine.complete(fresh))
            asyncio.run(engine.close())
            store.flush()
            [(request_id, stored, sample_id, section, url)] = store.query(
                "select request_id, request, sample_id, section, endpoint from requests where run_id <> 'r-old'")[1]
            assert "Other. Other." not in stored and (sample_id, section, url) == ("s-1", 2, server.base_url)
            assert store.request_document(request_id)["messages"] == fresh.messages


def test_judges_run_on_their_own_endpoints(tmp_path, prefect):
    with FaultServer(realistic=True) as writer, FaultServer(realistic=True, model="judge-model") as judge:
        cfg = fleet_build(tmp_path, [writer.base_url], 4, name="judged")
        cfg.write_text(cfg.read_text() + f"""
[judges]
rubric = true

[[judges.endpoints]]
kind = "openai"
base_url = "{judge.base_url}"
model = "judge-model"
""")
        summary = asyncio.run(build(config=str(cfg)))
        assert summary["samples"] == 4

    assert len(judge.received) == 4 and all(b["model"] == "judge-model" for b in judge.received)
    assert all(b["model"] == "fault-model" for b in writer.received) and len(writer.received) == 16
    db = tmp_path / "judged.duckdb"
    assert rows(db, "select judge_model, count(*) from judgments group by all") == [("judge-model", 4)]
    assert sorted(rows(db, "select pool, endpoint from endpoint_stats")) == [
        ("judges", judge.base_url), ("writers", writer.base_url)]
