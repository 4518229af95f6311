"""The journal: every buffered row, one write() each, in a file beside the database.

A write() survives kill -9, so rows buffered for the next batch are not lost with the process.
When a batch is taken the journal becomes a numbered segment that goes with it, deleted once the
batch is committed; opening the database replays whatever segments and journal a killed writer left.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator


class Journal:
    def __init__(self, db_path: Path):
        self.path = db_path.with_name(db_path.name + ".journal")
        self._fd: int | None = None
        self._segments = 0

    def left_segments(self) -> list[Path]:
        """Numbered segments a killed writer left, oldest first."""
        return sorted(self.path.parent.glob(self.path.name + ".*"),
                      key=lambda p: int(p.suffix[1:]) if p.suffix[1:].isdigit() else -1)

    def replay(self, segments: list[Path]) -> Iterator[tuple[str, dict[str, Any]]]:
        """(table, row) for every complete line of the segments and then the journal itself."""
        for part in [*segments, self.path]:
            if not part.exists():
                continue
            for line in part.read_bytes().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # the one line a kill can cut short was never acknowledged
                yield entry["t"], entry["r"]

    def open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, table: str, row: dict[str, Any]) -> None:
        line = json.dumps({"t": table, "r": row}, ensure_ascii=False, default=_iso) + "\n"
        os.write(self._fd, line.encode("utf-8"))

    def rotate(self) -> Path:
        """The journal becomes a numbered segment (returned); a new, empty journal starts."""
        self._segments += 1
        segment = self.path.with_name(f"{self.path.name}.{os.getpid()}{self._segments:06d}")
        os.close(self._fd)
        os.rename(self.path, segment)
        self.open()
        return segment

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
