"""Reading a database from any process: on a read-only connection of its own, or, while a build
holds the file for writing, answered by that build over loopback (writer_channel.py)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from longform.errors import LongformError
from longform.store.database import Store
from longform.store.writer_channel import LiveReadError, ask_writer
from longform.store.opening import DatabaseBusy
from longform.store.sql_guard import Query


@contextmanager
def reading(path: Path) -> Iterator[Query]:
    """Read-only queries for a while (one page of the viewer, say) on one connection; while a
    build holds the database, each is answered by the build itself (writer_channel.py)."""
    try:
        store = Store.open_read_only(path)
    except DatabaseBusy as busy:
        store, refused = None, busy
    if store is None:
        def ask(sql: str, params: list[Any] | None = None) -> tuple[list[str], list[tuple]]:
            try:
                answer = ask_writer(path, sql, params)
            except LiveReadError as e:
                raise LongformError(f"query failed: {e}") from None
            if answer is None:
                raise refused  # no build answers: the database is held by something else
            return answer
        yield ask
        return
    try:
        yield store.query
    finally:
        store.close()


def read_query(path: Path, sql: str, params: list[Any] | None = None) -> tuple[list[str], list[tuple]]:
    """A read-only query, answered by the build that holds the database if there is one."""
    with reading(path) as query:
        return query(sql, params)
