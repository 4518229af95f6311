"""What produced a run: longform's version (and git commit when run from a checkout) and the
versions of the libraries that shape its outputs, stored on every `runs` row."""

from __future__ import annotations

import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

# The libraries whose versions change what a build writes, scores or trains.
_SHAPING = ("openai", "transformers", "trl", "duckdb", "llama-cpp-python", "prefect", "statsmodels",
            "rapidfuzz", "cn2an", "text2num")


@cache
def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"longform": _version("longform"), "git_commit": _git_commit()}
    out.update({name: _version(name) for name in _SHAPING})
    return out


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = done.stdout.strip()
    if done.returncode != 0 or not commit:
        return None
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=5, check=False).stdout.strip()
    return commit + ("-dirty" if dirty else "")
