"""The database a build writes: buffered appends, the few direct writes, and its reads.

DuckDB allows one writer process and is slow at row-at-a-time transactions, so rows are buffered
per table and appended as Arrow batches, all tables in one transaction: a sample and its sections
land together or not at all. Appends are insert-if-absent on each table's key, so writing the same
deterministic row twice (a resumed build) changes nothing.

Buffering must not lose paid-for answers when the process is killed, so every buffered row is
also appended to a journal file beside the database (journal.py: one write() per row, which survives a
kill -9). Opening the database replays whatever a killed writer left in it.

A batch falls due at `batch_rows` rows, or `flush_interval_s` after the last commit: a long-lived
writer (`Store.open(..., live=True)`: a build, an evaluation) checks the second on a timer thread,
so rows do not wait for the next `add` while a build waits on a slow model, and a live read
(writer_channel.py, served only by such writers) is never older than about that second. A due batch
is committed on a background thread, on a DuckDB cursor of its own (DuckDB releases the GIL while
it works): a commit takes tens of milliseconds, and on the event loop it would hold up every
request in flight. The batch takes the journal with it as a numbered segment, deleted once the
batch is committed; rows added meanwhile go to a new journal. Anything that reads, and `flush()`,
first waits for that commit. One lock guards the buffers, which the timer thread also swaps.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import duckdb
import pyarrow as pa

from longform.store import chunked_text
from longform.clock import now
from longform.errors import LongformError, first_line
from longform.prompts import Prompt
from longform.provenance import versions
from longform.store.journal import Journal
from longform.store.writer_channel import QueryServer
from longform.store.opening import connect, migrate, refuse_newer, schema_version
from longform.store.build_reads import PipelineReads, id_table
from longform.store.sql_guard import check_read_only
from longform.store.schema import APPEND_TABLES, LATEST


class Store(PipelineReads):
    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path, *, read_only: bool = False,
                 batch_rows: int = 512, flush_interval_s: float = 1.0):
        self._con = con
        self.path = path
        self.read_only = read_only
        self._journal = Journal(path)
        self._live_reads: QueryServer | None = None
        self._batch_rows = batch_rows
        self._flush_interval_s = flush_interval_s
        self._pending: dict[str, list[dict[str, Any]]] = {t: [] for t in APPEND_TABLES}
        # Answers not yet flushed must still be cache hits.
        self._pending_answers: dict[str, dict[str, Any]] = {}
        # Keys of stored answers, loaded on the first lookup: a miss (every request of a new build)
        # then costs a set lookup instead of a query.
        self._answered: set[str] | None = None
        self._texts_written: set[str] = set()
        # The batch being committed in the background: its answers (still cache hits) and journal segment.
        self._committing: Future | None = None
        self._committing_answers: dict[str, dict[str, Any]] = {}
        self._committing_segment: Path | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._writer: duckdb.DuckDBPyConnection | None = None
        self._last_flush = time.monotonic()
        self._lock = threading.RLock()
        self._timer: threading.Thread | None = None
        self._closing = threading.Event()

    # --- opening ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, live: bool = False, **kwargs: Any) -> "Store":
        """The database for writing. `live`: a long-lived writer, which answers other processes'
        reads (writer_channel.py) and commits on a timer; a short write (a training row) needs neither."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LongformError(f"{path.parent}: cannot create database directory ({e.strerror})") from None
        con = connect(path, read_only=False)
        store = cls(con, path, **kwargs)
        try:
            migrate(con, path)
            store._open_journal()
            if live:
                store._live_reads = QueryServer(con, path, check_read_only).start()
                store._start_timer()
        except BaseException:
            store._journal.close()
            con.close()
            raise
        return store

    @classmethod
    def open_read_only(cls, path: Path) -> "Store":
        if not path.exists():
            raise LongformError(f"{path}: no database here yet; run `longform build` first")
        con = connect(path, read_only=True)
        try:
            refuse_newer(path, schema_version(con))
        except LongformError:
            con.close()
            raise
        return cls(con, path, read_only=True)

    def close(self) -> None:
        self._closing.set()
        if self._timer is not None:
            self._timer.join()
            self._timer = None
        if self._live_reads is not None:
            self._live_reads.stop()
            self._live_reads = None
        try:
            self.flush()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._writer.close()
            self._journal.close()
            self._con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- runs (few rows, written at once) --------------------------------------------------------

    def start_run(self, run_id: str, name: str, config: dict, prompts_path: str | None,
                  prefect_flow_run_id: str | None) -> None:
        self._con.execute(
            "INSERT INTO runs (run_id, name, status, config, prompts_path, prefect_flow_run_id, started_at, versions)"
            " VALUES (?, ?, 'running', ?, ?, ?, ?, ?)",
            [run_id, name, json.dumps(config), prompts_path, prefect_flow_run_id, now(), json.dumps(versions())],
        )

    def interrupt_stale_runs(self) -> list[tuple[str, str]]:
        """Runs left `running` by a killed build, now marked `interrupted`: (run_id, name).

        Only a process holding the write lock calls this, so no `running` run is alive.
        """
        return self._con.execute(
            "UPDATE runs SET status = 'interrupted', finished_at = ? WHERE status = 'running'"
            " RETURNING run_id, name", [now()]).fetchall()

    def put_run_stats(self, run_id: str, stages: dict[str, dict]) -> None:
        """Replace the run's per-stage counters (they are totals so far, not increments)."""
        rows = [[run_id, stage, s["requests"], s["attempts"], s["cache_hits"], s["tokens_in"], s["tokens_out"],
                 s["truncated"], json.dumps(s["errors"]), s["wall_s"], now()] for stage, s in stages.items()]
        if rows:
            self._con.executemany("INSERT OR REPLACE INTO run_stats VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def put_endpoint_stats(self, run_id: str, endpoints: list[dict]) -> None:
        """Replace the run's per-endpoint counters and states (totals so far)."""
        rows = [[run_id, e["pool"], e["endpoint"], e["state"], e["reason"] or None, e["concurrency"], e["requests"],
                 e["attempts"], e["failed_attempts"], e["tokens_in"], e["tokens_out"], json.dumps(e["errors"]),
                 e["wall_s"], now()] for e in endpoints]
        if rows:
            self._con.executemany("INSERT OR REPLACE INTO endpoint_stats VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                  rows)

    def finish_run(self, run_id: str, status: str, summary: dict) -> None:
        self.flush()
        self._con.execute(
            "UPDATE runs SET status = ?, finished_at = ?, summary = ? WHERE run_id = ?",
            [status, now(), json.dumps(summary), run_id],
        )

    def put_train_run(self, row: dict) -> None:
        """Insert or update a training run (few rows, written at once)."""
        columns = ("train_id", "kind", "dataset", "model", "model_path", "params", "lora", "rows", "status",
                   "steps", "final_loss", "output_dir", "error", "dataset_hash", "source_run_id")
        values = [row.get(c) for c in columns]
        self._con.execute(
            f"INSERT INTO train_runs ({', '.join(columns)}, started_at) VALUES ({', '.join('?' * len(columns))}, ?)"
            " ON CONFLICT (train_id) DO UPDATE SET status = excluded.status, steps = excluded.steps,"
            " final_loss = excluded.final_loss, error = excluded.error, finished_at = ?",
            [*values, now(), now()])

    def train_id_for(self, output_dir: Path) -> str | None:
        """The finished training run that saved a model in `output_dir`, if this database has one."""
        self.flush()
        found = self._con.execute("SELECT train_id FROM train_runs WHERE output_dir = ? AND status = 'finished'"
                                  " ORDER BY finished_at DESC LIMIT 1", [str(output_dir)]).fetchall()
        return found[0][0] if found else None

    def put_eval(self, row: dict, pairs: list[dict]) -> None:
        """One evaluated model's row, and the paired differences the evaluation measured so far
        (a row at a time: an evaluation has a few models)."""
        self.flush()
        columns = ("eval_id", "model", "source", "backend", "train_id", "prompts_path", "settings", "summary")
        self._con.execute(
            f"INSERT OR REPLACE INTO evals ({', '.join(columns)}, created_at) VALUES ({', '.join('?' * len(columns))}, ?)",
            [_cell(row.get(c)) for c in columns] + [now()])
        columns = ("eval_id", "model_a", "model_b", "metric", "n", "mean_diff", "ci_low", "ci_high")
        for pair in pairs:
            self._con.execute(f"INSERT OR REPLACE INTO eval_pairs ({', '.join(columns)}, created_at)"
                              f" VALUES ({', '.join('?' * len(columns))}, ?)", [pair.get(c) for c in columns] + [now()])

    def set_eval_quality(self, eval_id: str, rows: list[tuple[str, str, float | None, str]]) -> None:
        """S_q judged after the answers were stored: (model, prompt_id, quality, judge model) each."""
        self.flush()
        self._con.executemany("UPDATE eval_answers SET quality = ?, judge_model = ? WHERE eval_id = ? AND model = ?"
                              " AND prompt_id = ?", [[q, judge, eval_id, model, prompt] for model, prompt, q, judge in rows])

    def eval_answers_by_key(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """Answers already generated (not failed) under these answer keys, whatever evaluation asked them."""
        columns = APPEND_TABLES["eval_answers"]
        with self._id_table("_keys", keys):
            found = self._con.execute(f"SELECT {', '.join(columns)} FROM eval_answers JOIN _keys ON answer_key = _keys.id"
                                      " WHERE error IS NULL ORDER BY created_at").fetchall()
        return {row[columns.index("answer_key")]: dict(zip(columns, row)) for row in found}

    def replace_checks(self, run_id: str, filter_name: str, rows: list[dict]) -> None:
        """A run's checks of one filter, redone: the earlier ones go (an export run twice counts once)."""
        self.flush()
        self._con.execute("DELETE FROM filter_checks WHERE run_id = ? AND filter = ?", [run_id, filter_name])
        self.add_many("filter_checks", rows)
        self.flush()

    def clear_selection(self, run_id: str, purpose: str, metrics: list[str]) -> None:
        """Drop a run's earlier decisions of one kind, and the scores they were made on, before redoing them."""
        self.flush()
        self._con.execute("DELETE FROM selections WHERE run_id = ? AND purpose = ?", [run_id, purpose])
        self._con.execute("DELETE FROM scores WHERE run_id = ? AND list_contains(?, metric)", [run_id, metrics])

    # --- batched appends -------------------------------------------------------------------------

    def add(self, table: str, row: dict[str, Any]) -> None:
        if table not in APPEND_TABLES:
            raise ValueError(f"not an append table: {table}")
        row = {c: _cell(row.get(c)) for c in APPEND_TABLES[table]}
        with self._lock:
            self._journal.write(table, row)
            self._pending[table].append(row)
            if table == "requests" and row.get("error") is None:
                self._pending_answers[row["key"]] = row
            if (sum(map(len, self._pending.values())) >= self._batch_rows
                    or time.monotonic() - self._last_flush >= self._flush_interval_s):
                self._commit_in_background()

    def _start_timer(self) -> None:
        self._start_pool()  # here, on the opening thread: a cursor is not made while another thread queries

        def tick() -> None:
            while not self._closing.wait(min(self._flush_interval_s, 1.0) / 2):
                with self._lock:
                    running = self._committing
                    if running is not None and (not running.done() or running.exception() is not None):
                        continue  # a failed commit is raised to the writer by its next add or read
                    if (any(self._pending.values())
                            and time.monotonic() - self._last_flush >= self._flush_interval_s):
                        self._commit_in_background()

        self._timer = threading.Thread(target=tick, name="longform-store-timer", daemon=True)
        self._timer.start()

    def add_request(self, row: dict[str, Any], body: dict[str, Any]) -> None:
        """A `requests` row; its long message texts go to `texts` once (chunked_text.py)."""
        self.add("requests", {**row, "request": chunked_text.compact(body, self._add_text)})

    def _add_text(self, digest: str, text: str) -> None:
        # Insert-if-absent makes a repeat harmless; the set only saves journal and batch work. It is
        # emptied when large (a rebuild of the next few chunks costs less than unbounded memory).
        if digest in self._texts_written:
            return
        if len(self._texts_written) >= 2_000_000:
            self._texts_written.clear()
        self._texts_written.add(digest)
        self.add("texts", {"hash": digest, "text": text})

    def request_document(self, request_id: str) -> dict[str, Any] | None:
        """A stored request as it was sent (its texts put back), with the row's provenance."""
        if not self.read_only:
            self.flush()
        found = self._con.execute("SELECT request FROM requests WHERE request_id = ?", [request_id]).fetchall()
        if not found:
            return None
        doc = json.loads(found[0][0])
        hashes = chunked_text.refs(doc)
        texts = {}
        if hashes:
            texts = {h: row["text"] for h, row in self.rows_by_key("texts", hashes).items()}
        return chunked_text.expand(doc, texts)

    def add_many(self, table: str, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.add(table, row)

    def flush(self) -> None:
        """Commit everything added so far, and return when it is committed."""
        with self._lock:
            self._wait_for_commit()
            self._last_flush = time.monotonic()
            if not any(self._pending.values()):
                return
            batch, answers, segment = self._take_batch()
            self._commit(self._con, batch)
            self._committed(answers, segment)

    def _commit_in_background(self) -> None:
        self._last_flush = time.monotonic()
        if self._committing is not None:
            if not self._committing.done():
                return  # one commit at a time; rows keep collecting for the next
            self._wait_for_commit()
        batch, answers, segment = self._take_batch()
        self._start_pool()
        self._committing = self._pool.submit(self._commit, self._writer, batch)
        self._committing_answers, self._committing_segment = answers, segment

    def _start_pool(self) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="longform-store")
            # The commit thread's own cursor: DuckDB connections are not thread-safe.
            self._writer = self._con.cursor()

    def _wait_for_commit(self) -> None:
        if self._committing is None:
            return
        try:
            self._committing.result()  # a failed commit raises here; its rows stay in the journal segment
        finally:
            self._committing = None
        self._committed(self._committing_answers, self._committing_segment)
        self._committing_answers, self._committing_segment = {}, None

    def _take_batch(self) -> tuple[dict[str, list[dict]], dict[str, dict], Path]:
        batch = {table: rows for table, rows in self._pending.items() if rows}
        answers = self._pending_answers
        self._pending = {t: [] for t in APPEND_TABLES}
        self._pending_answers = {}
        return batch, answers, self._journal.rotate()

    @staticmethod
    def _commit(con: duckdb.DuckDBPyConnection, batch: dict[str, list[dict]]) -> None:
        con.begin()
        try:
            for table, rows in batch.items():
                _append(con, table, rows)
            con.commit()
        except BaseException:
            con.rollback()
            raise

    def _committed(self, answers: dict[str, dict], segment: Path) -> None:
        if self._answered is not None:
            self._answered.update(answers)
        segment.unlink(missing_ok=True)

    # --- the journal (journal.py) ---------------------------------------------------------------

    @property
    def journal_path(self) -> Path:
        return self._journal.path

    def _open_journal(self) -> None:
        """Replay what a killed writer left (committed segments are gone), then start an empty journal."""
        left = self._journal.left_segments()
        for table, row in self._journal.replay(left):
            self._pending[table].append(row)
        self._journal.open()
        self.flush()
        for part in left:
            part.unlink(missing_ok=True)

    # --- reads -----------------------------------------------------------------------------------

    def cached_answer(self, key: str) -> dict[str, Any] | None:
        with self._lock:  # the timer thread may be moving the key from one buffer to the next
            if key in self._pending_answers:
                return self._pending_answers[key]
            if key in self._committing_answers:
                return self._committing_answers[key]
        if self._answered is None:
            self._answered = {k for (k,) in self._con.execute(
                "SELECT DISTINCT key FROM requests WHERE error IS NULL").fetchall()}
        if key not in self._answered:
            return None
        # fetchall, not fetchone: a result left unfinished blocks registering an Arrow table on this connection.
        found = self._con.execute(
            "SELECT response_text, finish_reason, tokens_in, tokens_out, logprobs FROM requests"
            " WHERE key = ? AND error IS NULL LIMIT 1",
            [key],
        ).fetchall()
        if not found:
            return None
        return dict(zip(("response_text", "finish_reason", "tokens_in", "tokens_out", "logprobs"), found[0]))

    def add_prompts(self, prompts: list[Prompt], source: str) -> None:
        known = self.known_prompts([p.prompt_id for p in prompts])
        for p in prompts:
            if p.prompt_id not in known:
                continue
            # An id is an identity: reusing it for a new text or length would pair old samples with it on export.
            instruction, *lengths = known[p.prompt_id]
            if instruction != p.instruction:
                raise LongformError(f"{source}: prompt id {p.prompt_id!r} is already in {self.path}"
                                    " with a different instruction; give the changed prompt a new id")
            if tuple(lengths) != (p.target_words, p.min_words, p.max_words):
                raise LongformError(f"{source}: prompt id {p.prompt_id!r} is already in {self.path} with a different"
                                    " target_words/min_words/max_words; give the changed prompt a new id")
        self.add_many("prompts", (
            {"prompt_id": p.prompt_id, "instruction": p.instruction, "target_words": p.target_words,
             "min_words": p.min_words, "max_words": p.max_words, "meta": p.meta or None, "source": source,
             "created_at": now()} for p in prompts))

    def merge_shard(self, path: Path, build_name: str) -> tuple[int, dict]:
        """Insert a shard database's rows into this one, idempotently (same keys: a second merge adds
        nothing), in one transaction; (rows added, the shard's latest finished run summary)."""
        self.flush()
        if not path.exists():
            raise LongformError(f"{path}: no shard database here")
        try:
            self._con.execute(f"ATTACH '{_sql_text(path)}' AS shard (READ_ONLY)")
        except duckdb.Error as e:
            raise LongformError(f"{path}: cannot open the shard database ({first_line(e)})") from None
        try:
            version = self._con.execute("SELECT coalesce(max(version), 0) FROM shard.schema_version").fetchall()[0][0]
            if version != LATEST:
                raise LongformError(f"{path}: shard database has schema v{version}, this longform writes v{LATEST};"
                                    " run its shard again with this longform")
            names = sorted(n for (n,) in self._con.execute("SELECT DISTINCT name FROM shard.runs").fetchall())
            if names != [build_name]:
                raise LongformError(f"{path}: a shard of build {', '.join(map(repr, names)) or '(none)'}, not of"
                                    f" {build_name!r}; point [build] shard_dir elsewhere or remove it")
            found = self._con.execute("SELECT summary FROM shard.runs WHERE status = 'finished'"
                                      " ORDER BY finished_at DESC LIMIT 1").fetchall()
            if not found:
                raise LongformError(f"{path}: the shard never finished a run; run the same command again")
            summary = json.loads(found[0][0])
            added = 0
            self._con.begin()
            try:
                # Runs and their counters are replaced by the shard's latest; everything else is
                # insert-if-absent on its key.
                for table in ("runs", "run_stats", "endpoint_stats"):
                    self._con.execute(f"INSERT OR REPLACE INTO {table} SELECT * FROM shard.{table}")
                for table, columns in APPEND_TABLES.items():
                    cols = ", ".join(columns)
                    before = self._con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
                    self._con.execute(f"INSERT OR IGNORE INTO {table} ({cols}) SELECT {cols} FROM shard.{table}")
                    added += self._con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] - before
                self._con.commit()
            except BaseException:
                self._con.rollback()
                raise
        finally:
            self._con.execute("DETACH shard")
        self._answered = None  # the merged requests are cache hits now
        return added, summary

    def rows_by_key(self, table: str, keys: list[str]) -> dict[str, dict[str, Any]]:
        """Rows of an append table whose first column (its key) is one of `keys`, by key."""
        columns = APPEND_TABLES[table]
        if not self.read_only:
            self.flush()
        with self._id_table("_keys", keys):
            found = self._con.execute(f"SELECT {', '.join(columns)} FROM {table} JOIN _keys ON {columns[0]} = _keys.id"
                                      ).fetchall()
        return {row[0]: dict(zip(columns, row)) for row in found}

    def query(self, sql: str, params: list[Any] | None = None) -> tuple[list[str], list[tuple]]:
        if self.read_only:
            check_read_only(self._con, sql)
        else:
            self.flush()
        try:
            cur = self._con.execute(sql, params or [])
        except duckdb.Error as e:
            raise LongformError(f"query failed: {first_line(e)}") from None
        if cur.description is None:
            return [], []
        return [d[0] for d in cur.description], cur.fetchall()


    # --- what PipelineReads reads with ---------------------------------------------------------

    def _rows(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        return self.query(sql, params)[1]

    @contextmanager
    def _id_table(self, name: str, ids: list[str]) -> Iterator[None]:
        if not self.read_only:
            self.flush()
        self._con.register(name, id_table(ids))
        try:
            yield
        finally:
            self._con.unregister(name)


def _append(con: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, Any]]) -> None:
    columns = APPEND_TABLES[table]
    batch = pa.table({c: [r.get(c) for r in rows] for c in columns})
    con.register("_batch", batch)
    try:
        cols = ", ".join(columns)
        con.execute(f"INSERT OR IGNORE INTO {table} ({cols}) SELECT {cols} FROM _batch")
    finally:
        con.unregister("_batch")


def _sql_text(path: Path) -> str:
    # ATTACH takes no parameters: the path is quoted as an SQL string literal.
    return str(path).replace("'", "''")


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value
