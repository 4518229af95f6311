"""Export samples as a TRL conversational SFT dataset with a dataset card.

Files are written beside their final names and renamed into place, so a crash mid-export never
leaves a half-written Parquet file that a training job would load.
"""

from __future__ import annotations

import json
import os
import statistics
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from longform.errors import LongformError
from longform.store import Store

_COLUMNS = ("sample_id", "prompt_id", "instruction", "text", "words", "length_counter",
            "required_words", "length_score", "writer", "model")


def check_out_dir(out_dir: Path) -> None:
    """Refuse an output directory that cannot be written before any model time is spent."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".longform-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise LongformError(f"{out_dir}: output directory is not writable ({e.strerror})") from None


def export_sft(store: Store, *, out_dir: Path, name: str, run_id: str, config: dict) -> Path:
    """The run's selected SFT samples (its `selections` rows)."""
    _, rows = store.query(
        f"SELECT {', '.join('s.' + c if c != 'instruction' else 'p.instruction' for c in _COLUMNS)}"
        " FROM selections sel JOIN samples s USING (sample_id) JOIN prompts p ON p.prompt_id = s.prompt_id"
        " WHERE sel.run_id = ? AND sel.purpose = 'sft' AND sel.selected"
        " ORDER BY s.prompt_id, s.sample_index",
        [run_id],
    )
    _, (considered,) = store.query("SELECT count(*) FROM selections WHERE run_id = ? AND purpose = 'sft'", [run_id])
    records = [dict(zip(_COLUMNS, row)) for row in rows]
    target = out_dir / name
    target.mkdir(parents=True, exist_ok=True)

    table = pa.table({
        "messages": [[{"role": "user", "content": r["instruction"]},
                      {"role": "assistant", "content": r["text"]}] for r in records],
        **{c: [r[c] for r in records] for c in _COLUMNS if c not in ("instruction", "text")},
    })
    if records:
        _atomic(target / "sft.parquet", lambda p: pq.write_table(table, p))
        _atomic(target / "sft.jsonl", lambda p: p.write_text(
            "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in table.to_pylist()), encoding="utf-8"))
    else:
        # No data files rather than empty ones (datasets cannot load a 0-row Parquet file), and
        # none left from an earlier export that the card no longer describes.
        for stale in ("sft.parquet", "sft.jsonl"):
            (target / stale).unlink(missing_ok=True)
    card = dataset_card(name, records, run_id=run_id, config=config, considered=considered[0])
    _atomic(target / "README.md", lambda p: p.write_text(card, encoding="utf-8"))
    return target


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def dataset_card(name: str, records: list[dict], *, run_id: str, config: dict, considered: int) -> str:
    words = [r["words"] for r in records]
    scores = [r["length_score"] for r in records]
    models = sorted({r["model"] for r in records}) or [config.get("endpoint", {}).get("model") or "?"]
    writers = sorted({r["writer"] for r in records})
    counters = sorted({r["length_counter"] for r in records}) or ["lbw_words"]

    def stats(values: list[float]) -> str:
        if not values:
            return "n/a"
        return (f"min {min(values):.0f} · median {statistics.median(values):.0f} · "
                f"mean {statistics.fmean(values):.0f} · max {max(values):.0f}")

    lines = [
        f"# {name}",
        "",
        "Long-output SFT data built by longform in TRL's conversational format",
        "(`messages`: one user instruction, one assistant answer).",
        "",
        "| | |",
        "|---|---|",
        f"| rows | {len(records)} of {considered} samples written, kept by the selection policy (see Config) |",
        f"| words per answer ({', '.join(counters)}) | {stats(words)} |",
        f"| LongBench-Write length score S_l | {stats(scores)} |",
        f"| generation model | {', '.join(models)} |",
        f"| writer | {', '.join(writers) or 'n/a'} |",
        f"| run | `{run_id}` |",
        f"| exported | {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} |",
        "",
        "`lbw_words` is LongBench-Write's counter: one unit per CJK character plus one per Latin word.",
        "",
        "## Files",
        "- `sft.parquet`, `sft.jsonl`: columns `messages`, `sample_id`, `prompt_id`, `words`,",
        "  `length_counter`, `required_words`, `length_score`, `writer`, `model`.",
        "",
        "```python",
        "from datasets import load_dataset",
        f'ds = load_dataset("parquet", data_files="datasets_out/{name}/sft.parquet")["train"]',
        "```",
        "",
        "## Provenance",
        "Every row's `sample_id` is a row of the `samples` table in the longform DuckDB database; its",
        "plan and paragraphs are in `sections`, every request that produced it in `requests`:",
        "",
        "```sql",
        "select * from sections where sample_id = '<sample_id>' order by idx;",
        f"select * from selections where run_id = '{run_id}' and sample_id = '<sample_id>';",
        "```",
        "",
        "## Config",
        "```json",
        json.dumps(config, indent=2, ensure_ascii=False),
        "```",
        "",
    ]
    return "\n".join(lines)
