"""Merging a finished shard's database into the build's, idempotently (flows/shards.py)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from longform.errors import LongformError, first_line
from longform.store.schema import APPEND_TABLES, LATEST


def merge_shard(con: duckdb.DuckDBPyConnection, path: Path, build_name: str) -> tuple[int, dict]:
    """Insert a shard database's rows into the database of `con`, idempotently (same keys: a second
    merge adds nothing), in one transaction; (rows added, the shard's latest finished run summary).
    A shard is merged only once it finished a run: a killed shard's file is never merged half-written."""
    if not path.exists():
        raise LongformError(f"{path}: no shard database here")
    try:
        con.execute(f"ATTACH '{_sql_text(path)}' AS shard (READ_ONLY)")
    except duckdb.Error as e:
        raise LongformError(f"{path}: cannot open the shard database ({first_line(e)})") from None
    try:
        version = con.execute("SELECT coalesce(max(version), 0) FROM shard.schema_version").fetchall()[0][0]
        if version != LATEST:
            raise LongformError(f"{path}: shard database has schema v{version}, this longform writes v{LATEST};"
                                " run its shard again with this longform")
        names = sorted(n for (n,) in con.execute("SELECT DISTINCT name FROM shard.runs").fetchall())
        if names != [build_name]:
            raise LongformError(f"{path}: a shard of build {', '.join(map(repr, names)) or '(none)'}, not of"
                                f" {build_name!r}; point [build] shard_dir elsewhere or remove it")
        found = con.execute("SELECT summary FROM shard.runs WHERE status = 'finished'"
                                  " ORDER BY finished_at DESC LIMIT 1").fetchall()
        if not found:
            raise LongformError(f"{path}: the shard never finished a run; run the same command again")
        summary = json.loads(found[0][0])
        added = 0
        con.begin()
        try:
            # Runs and their counters are replaced by the shard's latest; everything else is
            # insert-if-absent on its key.
            for table in ("runs", "run_stats", "endpoint_stats"):
                con.execute(f"INSERT OR REPLACE INTO {table} SELECT * FROM shard.{table}")
            for table, columns in APPEND_TABLES.items():
                cols = ", ".join(columns)
                before = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
                con.execute(f"INSERT OR IGNORE INTO {table} ({cols}) SELECT {cols} FROM shard.{table}")
                added += con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] - before
            con.commit()
        except BaseException:
            con.rollback()
            raise
    finally:
        con.execute("DETACH shard")
    return added, summary


def _sql_text(path: Path) -> str:
    # ATTACH takes no parameters: the path is quoted as an SQL string literal.
    return str(path).replace("'", "''")
