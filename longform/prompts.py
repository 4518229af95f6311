"""Reading prompt files: one JSON object per line, refused line by line with a precise reason."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from longform.errors import LongformError

if TYPE_CHECKING:
    from longform.config import Settings

_KNOWN = {"id", "instruction", "target_words", "min_words", "max_words"}


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    instruction: str
    # The length the user asked for in the JSONL file; None means "read it from the instruction".
    target_words: int | None = None
    meta: dict = field(default_factory=dict, compare=False)
    # Bounds from the prompts file: at least / at most / a range (longform/length_reader.py).
    min_words: int | None = None
    max_words: int | None = None


def prompt_id_for(instruction: str) -> str:
    return "p-" + hashlib.sha256(instruction.encode("utf-8")).hexdigest()[:16]


def required_prompts_path(settings: "Settings", config_source: object) -> Path:
    if settings.build.prompts is None:
        raise LongformError(f"{config_source}: [build] prompts is not set; set it or pass --prompts")
    return settings.build.prompts


def load_prompt_file(path: Path, limit: int | None = None) -> list[Prompt]:
    """longform's prompts JSONL, or LongBench-Write's (`prompt`, `length`, `type` per line, told apart
    by its first line): `length` is the required length, which LongBench-Write scores as a target."""
    try:
        with path.open(encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), "")
        head = json.loads(first) if first else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        head = {}   # load_prompts names the problem, with its line
    if isinstance(head, dict) and "prompt" in head and "instruction" not in head:
        return _longbench_write(path, limit)
    return load_prompts(path, limit)


def _longbench_write(path: Path, limit: int | None) -> list[Prompt]:
    prompts = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise LongformError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
        length = obj.get("length") if isinstance(obj, dict) else None
        if (not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or isinstance(length, bool)
                or not isinstance(length, int) or length <= 0):
            raise LongformError(f"{path}:{lineno}: a LongBench-Write line needs a `prompt` string and a positive"
                                " integer `length`")
        prompts.append(Prompt(str(obj.get("id") or f"lbw-{lineno}"), obj["prompt"], target_words=length,
                              meta={"type": obj.get("type")}))
        if limit is not None and len(prompts) >= limit:
            break
    if not prompts:
        raise LongformError(f"{path}: no prompts in file")
    return prompts


def load_prompts(path: Path, limit: int | None = None) -> list[Prompt]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LongformError(f"{path}: prompts file not found") from None
    except OSError as e:
        raise LongformError(f"{path}: cannot read ({e.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise LongformError(f"{path}:{line}: not UTF-8 (byte {e.start})") from None

    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        prompt = _parse_line(path, lineno, line)
        if prompt.prompt_id in seen:
            raise LongformError(
                f"{path}:{lineno}: duplicate prompt id {prompt.prompt_id!r} (first on line {seen[prompt.prompt_id]})"
            )
        seen[prompt.prompt_id] = lineno
        prompts.append(prompt)
        if limit is not None and len(prompts) >= limit:
            break
    if not prompts:
        raise LongformError(f"{path}: no prompts in file")
    return prompts


def _parse_line(path: Path, lineno: int, line: str) -> Prompt:
    where = f"{path}:{lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise LongformError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise LongformError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    instruction = obj.get("instruction")
    if not isinstance(instruction, str):
        raise LongformError(f"{where}: missing string key 'instruction'")
    if not instruction.strip():
        raise LongformError(f"{where}: empty instruction")
    lengths = {}
    for key in ("target_words", "min_words", "max_words"):
        value = obj.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise LongformError(f"{where}: {key!r} must be a positive integer, got {value!r}")
        lengths[key] = value
    if lengths["target_words"] and (lengths["min_words"] or lengths["max_words"]):
        raise LongformError(f"{where}: give 'target_words' or 'min_words'/'max_words', not both")
    if lengths["min_words"] and lengths["max_words"] and lengths["min_words"] > lengths["max_words"]:
        raise LongformError(f"{where}: 'min_words' {lengths['min_words']} is above 'max_words' {lengths['max_words']}")
    pid = obj.get("id")
    if pid is None:
        pid = prompt_id_for(instruction)
    elif not isinstance(pid, (str, int)) or isinstance(pid, bool) or not str(pid).strip():
        raise LongformError(f"{where}: 'id' must be a non-empty string or integer")
    meta = {k: v for k, v in obj.items() if k not in _KNOWN}
    return Prompt(prompt_id=str(pid), instruction=instruction, meta=meta, **lengths)


def refuse_changed_ids(prompts: list[Prompt], known: dict[str, tuple], *, source: object, where: object) -> None:
    """An id is an identity: reusing a stored prompt id for a new text or length would pair old
    samples with it on export. `known`: prompt_id → (instruction, target_words, min_words, max_words)."""
    for p in prompts:
        if p.prompt_id not in known:
            continue
        instruction, *lengths = known[p.prompt_id]
        if instruction != p.instruction:
            raise LongformError(f"{source}: prompt id {p.prompt_id!r} is already in {where}"
                                " with a different instruction; give the changed prompt a new id")
        if tuple(lengths) != (p.target_words, p.min_words, p.max_words):
            raise LongformError(f"{source}: prompt id {p.prompt_id!r} is already in {where} with a different"
                                " target_words/min_words/max_words; give the changed prompt a new id")
