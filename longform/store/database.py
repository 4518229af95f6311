"""The database a build writes: opening and closing it, its reads, and the request cache. Its
other concerns live beside it and are mixed into `Store`: appends.py (the append buffer, journal
and commits), bookkeeping.py (the few direct writes), build_reads.py (the reads a build's stages
make), shard_merge.py (merging a shard's database).

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
from typing import Any, Iterator

import duckdb

from longform.clock import now
from longform.errors import LongformError, first_line
from longform.prompts import Prompt
from longform.store import chunked_text
from longform.store.appends import BufferedAppends
from longform.store.bookkeeping import Bookkeeping
from longform.store.build_reads import PipelineReads, id_table
from longform.store.journal import Journal
from longform.store.opening import connect, migrate, refuse_foreign, refuse_newer, refuse_older, schema_version
from longform.store.schema import APPEND_TABLES
from longform.store.shard_merge import merge_shard
from longform.store.sql_guard import check_read_only
from longform.store.writer_channel import QueryServer


class Store(BufferedAppends, Bookkeeping, PipelineReads):
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
            refuse_foreign(con, path)
            version = schema_version(con)
            refuse_newer(path, version)
            refuse_older(path, version)
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

    def merge_shard(self, path: Path, build_name: str) -> tuple[int, dict]:
        """shard_merge.merge_shard into this database."""
        self.flush()
        merged = merge_shard(self._con, path, build_name)
        self._answered = None  # the merged requests are cache hits now
        return merged

    def add_prompts(self, prompts: list[Prompt], source: str) -> None:
        """Insert-if-absent. Whether a stored id may be given again is the caller's rule
        (prompts.refuse_changed_ids, applied by BuildSession.register_prompts)."""
        self.add_many("prompts", (
            {"prompt_id": p.prompt_id, "instruction": p.instruction, "target_words": p.target_words,
             "min_words": p.min_words, "max_words": p.max_words, "meta": p.meta or None, "source": source,
             "created_at": now()} for p in prompts))

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

