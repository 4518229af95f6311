"""Builds split across processes or machines: which shard a prompt belongs to, where each shard's
database lives, and the settings a shard runs with.

DuckDB allows one writer per file, so each shard writes its own file (datatrove's per-rank output
pattern) and the parent merges them (`Store.merge_shard`). A prompt's shard is a hash of its id
modulo N: stable across reruns and machines, and all samples of a prompt land in one shard, so a
prompt's pairwise judgments happen where its candidates are.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from pathlib import Path

from longform.clock import timed_id
from longform.config import Settings, parse_settings
from longform.errors import LongformError
from longform.prompts import Prompt

# A TOML file with [endpoint] or [[endpoints]] (and optionally [[judges.endpoints]]) that replaces
# the build's on this machine: how a worker on a GPU node points its shards at its own servers.
NODE_ENDPOINTS_ENV = "LONGFORM_NODE_ENDPOINTS"


def shard_of(prompt_id: str, shards: int) -> int:
    return int.from_bytes(hashlib.sha256(prompt_id.encode("utf-8")).digest()[:8], "big") % shards


def shard_prompts(prompts: list[Prompt], shard: int, shards: int) -> list[Prompt]:
    return [p for p in prompts if shard_of(p.prompt_id, shards) == shard]


def shard_db(settings: Settings, shard: int, shards: int) -> Path:
    folder = settings.build.shard_dir or settings.build.out_dir / settings.build.name / "shards"
    return folder / f"shard-{shard}-of-{shards}.duckdb"


def check_shards(shard: int, shards: int) -> None:
    if shards < 1:
        raise LongformError(f"--shards {shards}: needs at least 1")
    if not 0 <= shard < shards:
        raise LongformError(f"--shard {shard}: must be between 0 and {shards - 1} for {shards} shards")


def shard_settings(settings: Settings, shard: int, shards: int) -> Settings:
    """The build's settings as one shard runs them: its own database, no export (the parent
    exports the merged corpus), and this machine's endpoints if it names its own."""
    raw = settings.model_dump(mode="json", exclude_unset=True)
    raw.setdefault("build", {}).update(db=str(shard_db(settings, shard, shards)), shard=shard, shards=shards)
    raw.setdefault("export", {})["enabled"] = False
    if node := os.environ.get(NODE_ENDPOINTS_ENV):
        try:
            local = tomllib.loads(Path(node).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise LongformError(f"{node} ({NODE_ENDPOINTS_ENV}): cannot read endpoints ({e})") from None
        unknown = set(local) - {"endpoint", "endpoints", "judges"}
        if unknown:
            raise LongformError(f"{node} ({NODE_ENDPOINTS_ENV}): only [endpoint], [[endpoints]] and"
                                f" [[judges.endpoints]] belong here, not {sorted(unknown)}")
        for key in ("endpoint", "endpoints"):
            raw.pop(key, None)
        raw.update({k: v for k, v in local.items() if k != "judges"})
        if "judges" in local:
            raw.setdefault("judges", {}).update(local["judges"])
        return parse_settings(raw, source=node)
    return parse_settings(raw)


def set_aside_if_unreadable(path: Path) -> Path | None:
    """A shard file its killed writer left damaged is moved aside (never merged half-written, never
    deleted: it is evidence) and the shard starts over; its journal stays, and the new database
    replays what the journal holds. Where it went, or None when the file is fine or absent."""
    from longform.store import Store
    from longform.store.opening import UnreadableDatabase

    if not path.exists():
        return None
    try:
        Store.open_read_only(path).close()
    except UnreadableDatabase:
        aside = path.with_name(f"{path.name}.unreadable-{timed_id('x')}")
        path.rename(aside)
        wal = path.with_name(path.name + ".wal")
        if wal.exists():
            wal.rename(aside.with_name(aside.name + ".wal"))
        return aside
    except LongformError:
        return None  # busy, older or newer: the shard's own open says so
    return None
