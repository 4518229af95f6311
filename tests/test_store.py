import time

import duckdb
import pytest

from longform.errors import LongformError
from longform.store.schema import LATEST
from longform.clock import now
from longform.store import Store
from longform.store.writer_channel import ask_writer


def _request(key: str, error: str | None = None) -> dict:
    return {"request_id": f"{key}-{error}", "key": key, "run_id": "r", "stage": "plan", "model": "m", "request": {"messages": []},
            "response_text": None if error else f"answer {key}", "finish_reason": None if error else "stop",
            "tokens_in": 1, "tokens_out": 2, "latency_s": 0.1, "attempts": 1, "error": error,
            "created_at": now()}


def _count(path, table):
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(f"select count(*) from {table}").fetchone()[0]
    finally:
        con.close()


def test_new_database_gets_latest_schema(tmp_path):
    Store.open(tmp_path / "a.duckdb").close()
    con = duckdb.connect(str(tmp_path / "a.duckdb"))
    assert con.execute("select max(version) from schema_version").fetchone()[0] == LATEST
    tables = {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}
    assert {"runs", "prompts", "requests", "samples", "sections", "failures"} <= tables
    con.close()


def test_database_from_a_newer_version_is_refused_and_left_intact(tmp_path):
    path = tmp_path / "a.duckdb"
    Store.open(path).close()
    con = duckdb.connect(str(path))
    con.execute("insert into schema_version values (?, now())", [LATEST + 1])
    con.close()
    with pytest.raises(LongformError, match=f"schema v{LATEST + 1}, newer than"):
        Store.open(path)
    with pytest.raises(LongformError, match="newer than"):
        Store.open_read_only(path)
    assert _count(path, "schema_version") == LATEST + 1


def test_appends_are_batched_and_cache_sees_unflushed_answers(tmp_path):
    path = tmp_path / "a.duckdb"
    store = Store.open(path, batch_rows=100, flush_interval_s=3600)
    store.add("requests", _request("k1"))
    store.add("requests", _request("k2", error="http_500: boom"))
    assert store.cached_answer("k1")["response_text"] == "answer k1"  # still only in memory
    assert store.cached_answer("k2") is None                           # failures are never answers
    store.close()
    assert _count(path, "requests") == 2
    reopened = Store.open(path)
    assert reopened.cached_answer("k1")["finish_reason"] == "stop"
    assert reopened.cached_answer("k2") is None
    reopened.close()


def _live_count(path, table: str) -> int:
    # Asked over the writer's live-read channel, as `longform query` in another process asks: it
    # sees committed rows only and, unlike `Store.query`, does not flush first.
    return ask_writer(path, f"select count(*) from {table}")[1][0][0]


def _eventually(check, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_batch_commits_when_full_and_not_before(tmp_path):
    path = tmp_path / "a.duckdb"
    with Store.open(path, live=True, batch_rows=3, flush_interval_s=3600) as store:
        for i in range(2):
            store.add("requests", _request(f"k{i}"))
        time.sleep(0.3)
        assert _live_count(path, "requests") == 0          # two rows wait in the buffer
        store.add("requests", _request("k2"))              # the third fills the batch
        assert _eventually(lambda: _live_count(path, "requests") == 3)


def test_rows_are_committed_on_a_timer_while_the_writer_is_idle(tmp_path):
    """A build waiting on a slow model adds nothing for a while; its rows must not wait for the next add."""
    path = tmp_path / "a.duckdb"
    with Store.open(path, live=True, flush_interval_s=0.2) as store:
        store.add("requests", _request("k0"))
        assert _live_count(path, "requests") == 0
        assert _eventually(lambda: _live_count(path, "requests") == 1, timeout_s=5)
        assert store.cached_answer("k0")["response_text"] == "answer k0"  # still an answer after the move


def test_a_short_writer_serves_no_live_reads(tmp_path):
    path = tmp_path / "a.duckdb"
    with Store.open(path) as store:
        store.add("requests", _request("k0"))
        assert not (tmp_path / "a.duckdb.reader").exists() and ask_writer(path, "select 1") is None


def test_rewriting_a_deterministic_row_changes_nothing(tmp_path):
    path = tmp_path / "a.duckdb"
    row = {"failure_id": "f1", "run_id": "r", "stage": "plan", "prompt_id": "p", "sample_id": "s",
           "key": None, "reason": "unparsable_plan", "detail": "x", "created_at": now()}
    with Store.open(path) as store:
        store.add("failures", row)
        store.flush()
        store.add("failures", {**row, "detail": "changed"})
    with Store.open(path) as store:
        assert store.query("select detail from failures")[1] == [("x",)]


def test_read_only_store_refuses_writes_and_missing_database(tmp_path):
    path = tmp_path / "a.duckdb"
    Store.open(path).close()
    ro = Store.open_read_only(path)
    with pytest.raises(LongformError, match="query refused: DELETE"):
        ro.query("delete from runs")
    ro.close()
    with pytest.raises(LongformError, match="no database here yet"):
        Store.open_read_only(tmp_path / "missing.duckdb")


def test_unwritable_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(LongformError, match="cannot create database directory"):
        Store.open(blocker / "sub" / "a.duckdb")


def test_rows_buffered_when_the_writer_dies_are_replayed(tmp_path):
    path = tmp_path / "a.duckdb"
    store = Store.open(path, batch_rows=100, flush_interval_s=3600)
    store.add("requests", _request("k1"))
    store.add("requests", _request("k2"))
    store._con.close()  # a kill -9: no flush, no close; the journal is all that is left
    assert store.journal_path.stat().st_size > 0
    with open(store.journal_path, "ab") as f:
        f.write(b'{"t": "requests", "r": {"key": "half')  # a write cut short by the kill
    store._journal.close()

    reopened = Store.open(path)
    assert reopened.query("select key from requests order by key")[1] == [("k1",), ("k2",)]
    assert reopened.cached_answer("k2")["response_text"] == "answer k2"
    assert reopened.journal_path.stat().st_size == 0
    reopened.close()
    # Replaying twice (a crash between commit and truncation) duplicates nothing.
    Store.open(path).close()
    assert _count(path, "requests") == 2


def test_runs_left_running_are_marked_interrupted(tmp_path):
    with Store.open(tmp_path / "a.duckdb") as store:
        store.start_run("r1", "demo", {}, None, None)
        store.start_run("r2", "demo", {}, None, None)
        store.finish_run("r2", "finished", {})
        assert store.interrupt_stale_runs() == [("r1", "demo")]
        assert store.query("select run_id, status from runs order by run_id")[1] == [
            ("r1", "interrupted"), ("r2", "finished")]
        assert store.interrupt_stale_runs() == []


@pytest.mark.parametrize("sql", [
    "insert into runs select * from runs", "update runs set status = 'x'", "delete from samples",
    "drop table samples", "copy (select 1) to '{tmp}/leak.csv'", "attach '{tmp}/other.duckdb'",
    "install httpfs", "load httpfs", "create table t (a int)", "select 1; delete from samples",
])
def test_query_refuses_statements_that_write(tmp_path, sql):
    path = tmp_path / "a.duckdb"
    Store.open(path).close()
    ro = Store.open_read_only(path)
    try:
        with pytest.raises(LongformError, match="query (refused|failed)"):
            ro.query(sql.format(tmp=tmp_path))
        assert ro.query("select count(*) from runs")[1] == [(0,)]
        assert ro.query("explain select 1")[0]
    finally:
        ro.close()
    assert not (tmp_path / "leak.csv").exists() and not (tmp_path / "other.duckdb").exists()


def test_an_older_database_is_migrated_in_place_keeping_its_rows(tmp_path):
    from longform.store.schema import MIGRATIONS

    path = tmp_path / "v1.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_version (version INTEGER, applied_at TIMESTAMPTZ)")
    con.execute(MIGRATIONS[0])
    con.execute("INSERT INTO schema_version VALUES (1, now())")
    con.execute("INSERT INTO runs (run_id, name, status, config, started_at) VALUES ('r-old', 'x', 'finished', '{}', now())")
    con.close()
    with Store.open(path) as store:
        assert store.query("select max(version) from schema_version")[1] == [(LATEST,)]
        assert store.query("select run_id from runs")[1] == [("r-old",)]
        store.put_run_stats("r-old", {"write": {"requests": 1, "attempts": 1, "cache_hits": 0, "tokens_in": 1,
                                                "tokens_out": 1, "truncated": 0, "errors": {}, "wall_s": 0.1}})
        assert store.query("select stage from run_stats")[1] == [("write",)]


def test_length_evals_move_into_eval_answers(tmp_path):
    """v10: `eval-length`'s one-model rows become `longform eval`'s answers, each evaluation an `evals` row."""
    from longform.store.schema import MIGRATIONS

    path = tmp_path / "v9.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_version (version INTEGER, applied_at TIMESTAMPTZ)")
    for number, sql in enumerate(MIGRATIONS[:9], start=1):
        con.execute(sql)
        con.execute("INSERT INTO schema_version VALUES (?, now())", [number])
    con.execute("INSERT INTO length_evals (eval_id, model, prompt_id, instruction, required_words, text, words,"
                " length_counter, length_score, tokens_out, finish_reason, created_at, length_kind, bound_ok, train_id)"
                " VALUES ('e-old', 'out/model', 'p1', 'Write 30 words.', 30, 'some text', 2, 'lbw_words', 0.0, 3,"
                " 'stop', now(), 'exact', NULL, 't-1')")
    con.close()
    with Store.open(path) as store:
        assert store.query("select eval_id, model, prompt_id, words, train_id from eval_answers")[1] == [
            ("e-old", "out/model", "p1", 2, "t-1")]
        assert store.query("select eval_id, model, backend, train_id from evals")[1] == [
            ("e-old", "out/model", "transformers", "t-1")]
        assert store.query("select count(*) from information_schema.tables where table_name = 'length_evals'")[1] == [(0,)]


def test_a_stored_config_is_read_as_data():
    """A run's config written by another version: keys this one does not know are left out, in every
    section and in lists of endpoints, instead of refusing the database (`status`, `select`, `export`)."""
    from longform.config import Settings

    stored = Settings().snapshot()
    stored["build"]["moved_key"] = 1
    stored["gateau"] = {"enabled": True, "retired": "x"}
    stored["endpoints"] = [{"kind": "openai", "base_url": "http://h:1/v1", "old_knob": 2}]
    stored["a_section_from_the_future"] = {"k": 1}
    settings = Settings.from_stored(stored)
    assert settings.gateau.enabled and settings.endpoints[0].base_url == "http://h:1/v1"


def test_a_stale_reader_file_pointing_at_another_program_is_no_writer(tmp_path):
    """A killed build's address file whose port another program took since: no writer, not a traceback."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Other(BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>not here</html>")

        def log_message(self, *args):
            pass

    other = ThreadingHTTPServer(("127.0.0.1", 0), Other)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        path = tmp_path / "a.duckdb"
        (tmp_path / "a.duckdb.reader").write_text(json.dumps({"pid": 1, "port": other.server_address[1],
                                                              "token": "t"}))
        assert ask_writer(path, "select 1") is None
    finally:
        other.shutdown()
        other.server_close()
