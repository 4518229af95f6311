"""Opening a database file: the writer's lock, and migrating it to this longform's schema."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from longform.clock import now
from longform.errors import LongformError, first_line
from longform.store.schema import LATEST, MIGRATIONS  # noqa: F401  (LATEST: for `longform migrate`)


class DatabaseBusy(LongformError):
    """Another process has the database open for writing."""


class UnreadableDatabase(LongformError):
    """The file is there but is not a database DuckDB can open (not DuckDB's, or damaged)."""


# Every DuckDB file has these bytes at offset 8; a SQLite file starts with the other.
_DUCKDB_MAGIC = b"DUCK"
_SQLITE_MAGIC = b"SQLite format 3\x00"
# DuckDB would otherwise fetch an extension from the network to read a SQLite file, say.
_NO_DOWNLOADS = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


def check_database_file(path: Path) -> None:
    """Refuse, in one line, a path that is not a DuckDB file (or not yet a file at all)."""
    if path.is_dir():
        raise LongformError(f"{path}: a directory, not a database file; pass the .duckdb file")
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb") as f:
        head = f.read(16)
    if head.startswith(_SQLITE_MAGIC):
        raise LongformError(f"{path}: a SQLite database, not longform's DuckDB; pass a longform .duckdb file")
    if head[8:12] != _DUCKDB_MAGIC:
        raise UnreadableDatabase(f"{path}: not a DuckDB database file; pass a longform .duckdb file")


def connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    check_database_file(path)
    try:
        return duckdb.connect(str(path), read_only=read_only, config=_NO_DOWNLOADS)
    except duckdb.IOException as e:
        msg = str(e)
        pid = re.search(r"PID (\d+)", msg)
        if "lock" in msg.lower():
            holder = f" (PID {pid.group(1)})" if pid else ""
            raise DatabaseBusy(
                f"{path}: database is open for writing by another longform process{holder};"
                " wait for it to finish or use another --db"
            ) from None
        raise UnreadableDatabase(f"{path}: cannot open database ({first_line(e)})") from None
    except duckdb.Error as e:
        raise UnreadableDatabase(f"{path}: not a usable DuckDB database ({first_line(e)})") from None


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


def refuse_foreign(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """A DuckDB file with tables but no schema_version belongs to another program: never touch it."""
    if schema_version(con):
        return
    tables = [t for (t,) in con.execute("SELECT table_name FROM information_schema.tables ORDER BY 1").fetchall()]
    if tables:
        shown = ", ".join(tables[:3]) + (", …" if len(tables) > 3 else "")
        raise LongformError(f"{path}: a DuckDB database of another program (tables: {shown}), not a longform"
                            " corpus; pass another --db")


def refuse_older(path: Path, version: int) -> None:
    """Reads need today's tables; a read-only connection cannot migrate, so say how to."""
    if version < LATEST:
        raise LongformError(f"{path}: written by an older longform (schema v{version}, this one reads v{LATEST});"
                            f" run `longform migrate --db {path}` once (any build also migrates it)")


def migrate(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Apply the migrations this database has not had yet, all in one transaction."""
    refuse_foreign(con, path)
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
