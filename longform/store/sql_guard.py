"""What a read-only query may be: SELECT and EXPLAIN, nothing that writes a file or a database."""

from __future__ import annotations

from typing import Any, Callable

import duckdb

from longform.errors import LongformError, first_line

Query = Callable[[str, "list[Any] | None"], tuple[list[str], list[tuple]]]

_READ_ONLY_STATEMENTS = {"SELECT", "EXPLAIN"}


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    # A read-only connection already refuses INSERT or DROP on this database, but COPY ... TO
    # writes files, ATTACH opens other databases for writing and INSTALL downloads code; and
    # queries answered by a running build (writer_channel.py) run on its writable connection.
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise LongformError(f"query failed: {first_line(e)}") from None
    for statement in statements:
        kind = statement.type.name
        if kind not in _READ_ONLY_STATEMENTS:
            raise LongformError(f"query refused: {kind} statements may write; `longform query` only"
                                " runs SELECT (and EXPLAIN)")
