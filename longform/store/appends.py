"""The append buffer: rows are buffered per table, journaled, and committed as Arrow batches (see
database.py's docstring for when and why)."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

import duckdb
import pyarrow as pa

from longform.store import chunked_text
from longform.store.schema import APPEND_TABLES


class BufferedAppends:
    """Mixed into Store, whose __init__ sets the buffers, the journal, the lock and the commit pool."""

    def add(self, table: str, row: dict[str, Any]) -> None:
        if table not in APPEND_TABLES:
            raise ValueError(f"not an append table: {table}")
        row = {c: cell(row.get(c)) for c in APPEND_TABLES[table]}
        with self._lock:
            self._journal.write(table, row)
            self._pending[table].append(row)
            if table == "requests" and row.get("error") is None:
                self._pending_answers[row["key"]] = row
            if sum(map(len, self._pending.values())) >= self._batch_rows or self._interval_passed():
                self._commit_in_background()

    def _interval_passed(self) -> bool:
        return time.monotonic() - self._last_flush >= self._flush_interval_s

    def _start_timer(self) -> None:
        self._start_pool()  # here, on the opening thread: a cursor is not made while another thread queries

        def tick() -> None:
            while not self._closing.wait(min(self._flush_interval_s, 1.0) / 2):
                with self._lock:
                    running = self._committing
                    if running is not None and (not running.done() or running.exception() is not None):
                        continue  # a failed commit is raised to the writer by its next add or read
                    if any(self._pending.values()) and self._interval_passed():
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
                append(con, table, rows)
            con.commit()
        except BaseException:
            con.rollback()
            raise

    def _committed(self, answers: dict[str, dict], segment: Path) -> None:
        if self._answered is not None:
            self._answered.update(answers)
        segment.unlink(missing_ok=True)

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


def append(con: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, Any]]) -> None:
    columns = APPEND_TABLES[table]
    batch = pa.table({c: [r.get(c) for r in rows] for c in columns})
    con.register("_batch", batch)
    try:
        cols = ", ".join(columns)
        con.execute(f"INSERT OR IGNORE INTO {table} ({cols}) SELECT {cols} FROM _batch")
    finally:
        con.unregister("_batch")


def cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value
