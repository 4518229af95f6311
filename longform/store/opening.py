"""Opening a database file: the writer's lock, and migrating it to this longform's schema."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from longform.clock import now
from longform.errors import LongformError, first_line
from longform.store.schema import LATEST, MIGRATIONS


class DatabaseBusy(LongformError):
    """Another process has the database open for writing."""


def connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as e:
        msg = str(e)
        pid = re.search(r"PID (\d+)", msg)
        if "lock" in msg.lower():
            holder = f" (PID {pid.group(1)})" if pid else ""
            raise DatabaseBusy(
                f"{path}: database is open for writing by another longform process{holder};"
                " wait for it to finish or use another --db"
            ) from None
        raise LongformError(f"{path}: cannot open database ({first_line(e)})") from None
    except duckdb.Error as e:
        raise LongformError(f"{path}: not a usable DuckDB database ({first_line(e)})") from None


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchall()[0][0]
    if not exists:
        return 0
    return con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()[0][0]


def refuse_newer(path: Path, version: int) -> None:
    if version > LATEST:
        raise LongformError(f"{path}: database has schema v{version}, newer than this longform's v{LATEST};"
                            " upgrade longform to use it")


def migrate(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Apply the migrations this database has not had yet, all in one transaction."""
    version = schema_version(con)
    refuse_newer(path, version)
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
