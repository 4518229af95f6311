"""The one module that writes SQL.

DuckDB allows one writer process and is slow at row-at-a-time transactions, so rows are buffered
per table and appended as Arrow batches, all tables in one transaction: a sample and its sections
land together or not at all. Appends are insert-if-absent on each table's key, so writing the same
deterministic row twice (a resumed build) changes nothing.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import duckdb
import pyarrow as pa

from longform.errors import LongformError
from longform.schema import APPEND_TABLES, LATEST, MIGRATIONS


def now() -> datetime:
    return datetime.now(timezone.utc)


class Store:
    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path, *, read_only: bool = False,
                 batch_rows: int = 512, flush_interval_s: float = 1.0):
        self._con = con
        self.path = path
        self.read_only = read_only
        self._batch_rows = batch_rows
        self._flush_interval_s = flush_interval_s
        self._pending: dict[str, list[dict[str, Any]]] = {t: [] for t in APPEND_TABLES}
        # Answers not yet flushed must still be cache hits.
        self._pending_answers: dict[str, dict[str, Any]] = {}
        self._last_flush = time.monotonic()

    # --- opening ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, **kwargs: Any) -> "Store":
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LongformError(f"{path.parent}: cannot create database directory ({e.strerror})") from None
        con = _connect(path, read_only=False)
        try:
            _migrate(con, path)
        except BaseException:
            con.close()
            raise
        return cls(con, path, **kwargs)

    @classmethod
    def open_read_only(cls, path: Path) -> "Store":
        if not path.exists():
            raise LongformError(f"{path}: no database here yet; run `longform build` first")
        con = _connect(path, read_only=True)
        version = _schema_version(con)
        if version > LATEST:
            con.close()
            raise LongformError(_newer_schema(path, version))
        return cls(con, path, read_only=True)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- runs (few rows, written at once) --------------------------------------------------------

    def start_run(self, run_id: str, name: str, config: dict, prompts_path: str | None,
                  prefect_flow_run_id: str | None) -> None:
        self._con.execute(
            "INSERT INTO runs (run_id, name, status, config, prompts_path, prefect_flow_run_id, started_at)"
            " VALUES (?, ?, 'running', ?, ?, ?, ?)",
            [run_id, name, json.dumps(config), prompts_path, prefect_flow_run_id, now()],
        )

    def finish_run(self, run_id: str, status: str, summary: dict) -> None:
        self.flush()
        self._con.execute(
            "UPDATE runs SET status = ?, finished_at = ?, summary = ? WHERE run_id = ?",
            [status, now(), json.dumps(summary), run_id],
        )

    # --- batched appends -------------------------------------------------------------------------

    def add(self, table: str, row: dict[str, Any]) -> None:
        if table not in APPEND_TABLES:
            raise ValueError(f"not an append table: {table}")
        self._pending[table].append(row)
        if table == "requests" and row.get("error") is None:
            self._pending_answers[row["key"]] = row
        if (sum(map(len, self._pending.values())) >= self._batch_rows
                or time.monotonic() - self._last_flush >= self._flush_interval_s):
            self.flush()

    def add_many(self, table: str, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.add(table, row)

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not any(self._pending.values()):
            return
        self._con.begin()
        try:
            for table, rows in self._pending.items():
                if rows:
                    self._append(table, rows)
            self._con.commit()
        except BaseException:
            self._con.rollback()
            raise
        for rows in self._pending.values():
            rows.clear()
        self._pending_answers.clear()

    def _append(self, table: str, rows: list[dict[str, Any]]) -> None:
        columns = APPEND_TABLES[table]
        batch = pa.table({c: [_cell(r.get(c)) for r in rows] for c in columns})
        self._con.register("_batch", batch)
        try:
            cols = ", ".join(columns)
            # requests has no unique key: a key may have failed before it was answered.
            verb = "INSERT INTO" if table == "requests" else "INSERT OR IGNORE INTO"
            self._con.execute(f"{verb} {table} ({cols}) SELECT {cols} FROM _batch")
        finally:
            self._con.unregister("_batch")

    # --- reads -----------------------------------------------------------------------------------

    def cached_answer(self, key: str) -> dict[str, Any] | None:
        if key in self._pending_answers:
            return self._pending_answers[key]
        row = self._con.execute(
            "SELECT response_text, finish_reason, tokens_in, tokens_out FROM requests"
            " WHERE key = ? AND error IS NULL LIMIT 1",
            [key],
        ).fetchone()
        if row is None:
            return None
        return dict(zip(("response_text", "finish_reason", "tokens_in", "tokens_out"), row))

    def prompt_instructions(self, prompt_ids: list[str]) -> dict[str, str]:
        self.flush()
        rows = self._con.execute("SELECT prompt_id, instruction FROM prompts WHERE list_contains(?, prompt_id)",
                                 [prompt_ids]).fetchall()
        return dict(rows)

    def existing_sample_ids(self, sample_ids: list[str]) -> set[str]:
        self.flush()
        rows = self._con.execute("SELECT sample_id FROM samples WHERE list_contains(?, sample_id)",
                                 [sample_ids]).fetchall()
        return {r[0] for r in rows}

    def query(self, sql: str, params: list[Any] | None = None) -> tuple[list[str], list[tuple]]:
        if not self.read_only:
            self.flush()
        try:
            cur = self._con.execute(sql, params or [])
        except duckdb.Error as e:
            raise LongformError(f"query failed: {_first_line(e)}") from None
        if cur.description is None:
            return [], []
        return [d[0] for d in cur.description], cur.fetchall()


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value


def _connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as e:
        msg = str(e)
        pid = re.search(r"PID (\d+)", msg)
        if "lock" in msg.lower():
            holder = f" (PID {pid.group(1)})" if pid else ""
            raise LongformError(
                f"{path}: database is open for writing by another longform process{holder};"
                " wait for it to finish or use another --db"
            ) from None
        raise LongformError(f"{path}: cannot open database ({_first_line(e)})") from None
    except duckdb.Error as e:
        raise LongformError(f"{path}: not a usable DuckDB database ({_first_line(e)})") from None


def _schema_version(con: duckdb.DuckDBPyConnection) -> int:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchone()[0]
    if not exists:
        return 0
    return con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]


def _migrate(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    version = _schema_version(con)
    if version > LATEST:
        raise LongformError(_newer_schema(path, version))
    if version == LATEST:
        return
    con.begin()
    try:
        con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER, applied_at TIMESTAMPTZ)")
        for number in range(version + 1, LATEST + 1):
            con.execute(MIGRATIONS[number - 1])
            con.execute("INSERT INTO schema_version VALUES (?, ?)", [number, now()])
        con.commit()
    except BaseException:
        con.rollback()
        raise


def _newer_schema(path: Path, version: int) -> str:
    return (f"{path}: database has schema v{version}, newer than this longform's v{LATEST};"
            " upgrade longform to use it")


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
