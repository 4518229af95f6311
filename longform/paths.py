"""Checks that a path can be written, made before any model time (or Prefect start-up) is spent."""

from __future__ import annotations

import os
from pathlib import Path

from longform.errors import LongformError


def ensure_writable_dir(directory: Path, what: str) -> None:
    """Create `directory` if needed and prove a file can be written in it; one-line error if not."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".longform-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise LongformError(f"{directory}: {what} is not writable ({e.strerror})") from None


def ensure_writable_file(path: Path, what: str) -> None:
    """A file longform will create or open for writing: its directory writable, and the file, if it
    exists, a regular file it may write."""
    ensure_writable_dir(path.parent, f"{what}'s directory")
    if path.exists() and not path.is_file():
        raise LongformError(f"{path}: {what} is not a file")
    if path.exists() and not os.access(path, os.W_OK):
        raise LongformError(f"{path}: {what} is not writable (permission denied)")
