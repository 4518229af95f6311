"""Export a run's selections as TRL datasets with a dataset card.

    <out_dir>/<name>/sft/train.parquet, test.parquet   TRL conversational: `messages`
    <out_dir>/<name>/dpo/train.parquet, test.parquet   TRL preference: `prompt`, `chosen`, `rejected`
    <out_dir>/<name>/README.md                         the card
    <out_dir>/<name>/longform-export.json              what was exported from where

Rows are split by prompt (a hash of its id), so no prompt has candidates on both sides of the split.
Every row carries the `sample_id`s it came from. A split with no rows gets no file (datasets
cannot load an empty Parquet file).

An export is written whole into a folder beside the old one and swapped in by one rename, so a
crash leaves the old export or the new one, never a mix of both (a training job loading `sft/`
from one run and `dpo/` from another). What else the folder holds (a report, a user's notes) moves
into the new folder first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from longform.clock import now
from longform.dataset.decontaminate import EvalIndex
from longform.errors import LongformError
from longform.paths import ensure_writable_dir
from longform.dataset.relabel import relabel
from longform.store import Store
from longform.store.browsing import provenance_queries

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MANIFEST = "longform-export.json"


def check_out_dir(out_dir: Path) -> None:
    """Refuse an output directory that cannot be written before any model time is spent."""
    ensure_writable_dir(out_dir, "output directory")


def export_target(out_dir: Path, name: str, *, force: bool) -> Path:
    if not _NAME.match(name) or ".." in name:
        raise LongformError(f"export name {name!r}: use letters, digits, '_', '-' and '.', no path separators")
    target = out_dir / name
    if target.exists() and any(target.iterdir()) and not force:
        raise LongformError(f"{target}: already exists; pass --force to replace it")
    return target


def export_run(store: Store, *, run_id: str, target: Path, config: dict, test_ratio: float = 0.1,
               assistant_prefix: Callable[[int], str | None] | None = None, relabel_length: bool = False,
               decontaminate: list[Path] | None = None, include_plan: bool = False) -> dict:
    """Write the run's selected SFT samples and DPO pairs to `target`; the counts written.

    `decontaminate`: evaluation prompt files; a row whose instruction overlaps one is left out, and a
    `decontaminate` row in filter_checks (the store must be writable) says which prompt it overlapped.
    `relabel_length`: instructions rewritten to their answers' lengths (longform/dataset/relabel.py).
    `include_plan`: the SFT target is AgentWrite's plan, then the answer (LongWriter's ablation)."""
    sft = _sft_rows(store, run_id)
    dpo = _dpo_rows(store, run_id)
    shaping = {"relabel": relabel_length, "decontaminated": 0, "relabeled_sft": 0, "relabeled_dpo": 0, "with_plan": 0}
    if decontaminate:
        sft, dpo, shaping["decontaminated"] = _decontaminate(store, run_id, sft, dpo, decontaminate)
    if include_plan:
        plans = store.plans([r["sample_id"] for r in sft])
        for row in sft:
            if plans.get(row["sample_id"]):
                row["messages"][1]["content"] = f"{plan_text(plans[row['sample_id']])}\n\n{row['messages'][1]['content']}"
                shaping["with_plan"] += 1
    if relabel_length:
        shaping["relabeled_sft"] = _relabel(sft, lambda r: r["messages"][0], "words")
        shaping["relabeled_dpo"] = _relabel(dpo, lambda r: r["prompt"][0], "chosen_words")
    added_tokens: Counter = Counter()
    if assistant_prefix:
        for row in sft:
            token = assistant_prefix(row["words"])
            if token:
                row["messages"][1]["content"] = f"{token} {row['messages'][1]['content']}"
                row["meta_length_token"] = token
                added_tokens[token] += 1
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.new-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        counts = {}
        for kind, rows in (("sft", sft), ("dpo", dpo)):
            for split in ("train", "test"):
                part = [r for r in rows if _split(r["prompt_id"], test_ratio) == split]
                counts[f"{kind}_{split}"] = len(part)
                if part:
                    (staging / kind).mkdir(exist_ok=True)
                    pq.write_table(pa.Table.from_pylist(part), staging / kind / f"{split}.parquet")
        models = store.models_of(run_id)
        card = dataset_card(target.name, sft, dpo, counts, run_id=run_id, config=config, models=models,
                            added_tokens=added_tokens, sft_from=store.sft_purpose(run_id), shaping=shaping,
                            decontaminate=[str(p) for p in decontaminate or []])
        (staging / "README.md").write_text(card, encoding="utf-8")
        manifest = {"run_id": run_id, "name": target.name, "counts": counts, "shaping": shaping,
                    "meta_length_tokens": sorted(added_tokens), "exported_at": now().isoformat()}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {**counts, "shaping": shaping}


# What an export writes; anything else in the folder is carried over to the new one.
_EXPORT_OWNED = {"sft", "dpo", "README.md", MANIFEST, "sft.parquet", "sft.jsonl"}  # the last two: the layout before DPO


def _swap_in(staging: Path, target: Path) -> None:
    """Put the finished export in `staging` at `target` in one rename."""
    if target.exists():
        for entry in target.iterdir():
            if entry.name not in _EXPORT_OWNED:
                os.replace(entry, staging / entry.name)
        if _exchange(staging, target):
            shutil.rmtree(staging)  # now the old export
            return
        # No atomic exchange here (not Linux, or a file system without it): the old folder goes
        # aside first, so a crash between the two renames leaves no export, not a mixed one.
        aside = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, aside)
        os.replace(staging, target)
        shutil.rmtree(aside, ignore_errors=True)
        return
    os.replace(staging, target)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux's renameat2(RENAME_EXCHANGE). Written here because
    Python's os module has no binding for it (os.replace cannot replace a non-empty folder)."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a libc older than glibc 2.28
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def write_parquet(path: Path, rows: list[dict]) -> None:
    """Rows as one Parquet file, atomically; no file for no rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if rows:
        _atomic(path, lambda p: pq.write_table(pa.Table.from_pylist(rows), p))
    else:
        path.unlink(missing_ok=True)


def _split(prompt_id: str, test_ratio: float) -> str:
    bucket = int(hashlib.sha256(prompt_id.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if bucket < test_ratio else "train"


def _sft_rows(store: Store, run_id: str) -> list[dict]:
    out = []
    for r in store.selected_sft(run_id):
        out.append({"messages": [{"role": "user", "content": r.pop("instruction")},
                                 {"role": "assistant", "content": r.pop("text")}], **r})
    return out


def _dpo_rows(store: Store, run_id: str) -> list[dict]:
    out = []
    for r in store.selected_dpo(run_id):
        out.append({"prompt": [{"role": "user", "content": r.pop("instruction")}],
                    "chosen": [{"role": "assistant", "content": r.pop("chosen_text")}],
                    "rejected": [{"role": "assistant", "content": r.pop("rejected_text")}], **r})
    return out


def plan_text(plan: list[tuple[str, int]]) -> str:
    """A plan in LongWriter's own format, as its plan-augmented data puts it before the answer."""
    return "\n".join(f"Paragraph {i} - Main Point: {point} - Word Count: {words} words"
                     for i, (point, words) in enumerate(plan, start=1))


def _relabel(rows: list[dict], user_turn: Callable[[dict], dict], words_key: str) -> int:
    changed = 0
    for row in rows:
        turn = user_turn(row)
        row["original_instruction"] = turn["content"]
        if row.get("length_kind") is None:
            continue   # a sample written before lengths were specs: nothing says what it was asked
        new = relabel(turn["content"], kind=row["length_kind"], low=row["length_low"], high=row["length_high"],
                      unit=row["length_unit"] or "words", written=row[words_key])
        if new is not None:
            turn["content"] = new
            changed += 1
    return changed


def _decontaminate(store: Store, run_id: str, sft: list[dict], dpo: list[dict],
                   files: list[Path]) -> tuple[list[dict], list[dict], int]:
    index = EvalIndex(files)
    checks, removed = [], set()
    for row in sft + dpo:
        instruction = (row.get("messages") or row.get("prompt"))[0]["content"]
        hit = index.overlap(instruction)
        subject_id = row.get("sample_id") or row["chosen_sample_id"]
        if hit:
            removed.add(id(row))
        checks.append({"run_id": run_id, "subject": "sample", "subject_id": subject_id, "filter": "decontaminate",
                       "passed": hit is None, "reason": hit.reason() if hit else None, "created_at": now()})
    store.replace_checks(run_id, "decontaminate", checks)
    keep = [r for r in sft if id(r) not in removed], [r for r in dpo if id(r) not in removed]
    return keep[0], keep[1], len(removed)


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _histogram(words: list[int]) -> list[str]:
    if not words:
        return ["(no rows)"]
    edges = [0, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000, float("inf")]
    counts = Counter(next(i for i in range(len(edges) - 1) if edges[i] <= w < edges[i + 1]) for w in words)
    width = max(counts.values())
    lines = ["| words | rows | |", "|---|---|---|"]
    for i in range(len(edges) - 1):
        if counts[i]:
            hi = "∞" if edges[i + 1] == float("inf") else f"{edges[i + 1]:.0f}"
            lines.append(f"| {edges[i]:.0f}–{hi} | {counts[i]} | {'█' * max(1, round(20 * counts[i] / width))} |")
    return lines


def dataset_card(name: str, sft: list[dict], dpo: list[dict], counts: dict, *, run_id: str, config: dict,
                 models: dict, added_tokens: Counter, sft_from: str = "sft", shaping: dict | None = None,
                 decontaminate: list[str] | None = None) -> str:
    shaping = shaping or {}
    selection = config.get("selection", {})
    filters = config.get("filters", {})
    lines = [
        f"# {name}",
        "",
        "Long-output training data built by longform, in TRL's formats.",
        "",
        "| | train | test |",
        "|---|---|---|",
        f"| SFT rows (`sft/`, conversational `messages`) | {counts['sft_train']} | {counts['sft_test']} |",
        f"| DPO pairs (`dpo/`, preference `prompt`/`chosen`/`rejected`) | {counts['dpo_train']} | {counts['dpo_test']} |",
        "",
        f"- Generation model: {', '.join(models['generation']) or 'n/a'}",
        f"- Judge model: {', '.join(models['judge']) or 'none (no judges ran)'}",
        f"- Writers: {', '.join(sorted({r['writer'] for r in sft})) or 'n/a'}",
        f"- Run: `{run_id}`; exported {now().strftime('%Y-%m-%d %H:%M UTC')}",
        "- Split: by a hash of the prompt id, so all candidates of a prompt are on the same side.",
        "",
        "## Selection",
        f"- Required filters: {', '.join(filters.get('required', [])) or 'none'}"
        f" (near-duplicate ratio ≥ {filters.get('near_duplicate_prompts', '?')},"
        f" repeated-paragraph ratio ≥ {filters.get('repeated_paragraphs', '?')})",
        f"- SFT: length score S_l ≥ {selection.get('min_length_score', 0)}"
        + (f", length-controlled quality ≥ {selection['min_lc_quality']}" if selection.get("min_lc_quality") is not None else ""),
        f"- DPO: chosen meets S_l ≥ {selection.get('dpo_min_length_score', '?')}; rejected at least"
        f" {selection.get('dpo_margin', '?')} below it in the ranking score (see the `scores` column)",
        *([f"- GATEAU: SFT rows are the top of GATEAU's ranking of those (α = {config.get('gateau', {}).get('alpha')},"
           f" window {config.get('gateau', {}).get('window')} tokens); scores in the `scores` table"]
          if sft_from == "gateau" else []),
        "",
        *([f"- Decontaminated against {', '.join(decontaminate)}: {shaping.get('decontaminated', 0)} rows left out"
           " (see `filter_checks` where filter = 'decontaminate')"] if decontaminate else []),
        *([f"- Length labels: {shaping.get('relabeled_sft', 0)} SFT and {shaping.get('relabeled_dpo', 0)} DPO"
           " instructions rewritten to the answer's real length; the instruction as asked is in"
           " `original_instruction`"] if shaping.get("relabel") else []),
        *([f"- Plans: {shaping['with_plan']} SFT answers start with their AgentWrite plan"]
          if shaping.get("with_plan") else []),
        "",
        "## Lengths (`lbw_words`: one unit per CJK character plus one per Latin word)",
        "",
        "SFT answers:",
        "",
        *_histogram([r["words"] for r in sft]),
        "",
        "DPO chosen answers:",
        "",
        *_histogram([r["chosen_words"] for r in dpo]),
        "",
    ]
    if added_tokens:
        lines += ["## Meta Length Tokens",
                  "The assistant turn of each SFT row starts with Ruler's Meta Length Token for its length;"
                  " add these to the tokenizer before training:", "",
                  *[f"- `{token}` ({n} rows)" for token, n in sorted(added_tokens.items())], ""]
    lines += [
        "## Loading",
        "```python",
        "from datasets import load_dataset",
        f'sft = load_dataset("parquet", data_dir="{name}/sft")',
        f'dpo = load_dataset("parquet", data_dir="{name}/dpo")',
        "```",
        "",
        "## Provenance",
        "Every SFT row's `sample_id` (and every DPO row's `chosen_sample_id` / `rejected_sample_id`) is a",
        "row of the `samples` table in the longform DuckDB database; its paragraphs are in `sections`, its",
        "judgments in `judgments`, the decision in `selections`, every request in `requests`:",
        "",
        "```sql",
        *provenance_queries(run_id),
        "```",
        "",
        "## Config",
        "```json",
        json.dumps(config, indent=2, ensure_ascii=False),
        "```",
        "",
    ]
    return "\n".join(lines)
