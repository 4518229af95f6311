"""The reference pages that must not drift from the code, generated from it:

    docs/reference/config.md   every setting: section, key, type, default, and the comment beside it
                               in longform/config.py (a setting without one fails here)
    docs/reference/tables.md   every table and column, from a database this longform creates, with
                               what one row is (TABLES below; a table missing there fails here)
    docs/benchmarks.md         the table between its markers, from benchmarks/results/table.md

    python docs/generate.py           # rewrite them
    python docs/generate.py --check   # exit 1 if a committed page differs (tests/test_docs.py)
"""

from __future__ import annotations

import argparse
import ast
import inspect
import sys
import tempfile
import typing
from pathlib import Path

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from longform import config  # noqa: E402
from longform.store import Store  # noqa: E402
from longform.store.browsing import CorpusReads  # noqa: E402

DOCS = ROOT / "docs"
BENCH_START, BENCH_END = "<!-- table: benchmarks/results/table.md -->", "<!-- end of table -->"

# What one row of each table is. Columns come from the schema itself.
TABLES = {
    "runs": "a build: config snapshot (no secrets), status `running`/`finished`/`failed`/`interrupted`, Prefect"
            " flow-run id, summary, `versions` (longform's version and git commit, and the libraries that shape outputs)",
    "prompts": "a prompt: id, instruction, `target_words` or `min_words`/`max_words`, extra fields (`meta`)",
    "requests": "a request that reached the network: cache key, sample, prompt, section, the endpoint that answered"
                " (no credentials), request JSON (long texts as `texts` chunks), response, `finish_reason`, tokens,"
                " latency, attempts, error, token `logprobs` when asked for",
    "texts": "a chunk of a long request text (split at blank lines) by its hash: each paragraph of the text so far"
             " is stored about once, not once per later section",
    "samples": "a finished long output: writer, model, text, words and their counter, what was asked (kind, bounds,"
               " unit, the words that said it, where it came from), the aim, the kind-aware S_l, `bound_ok`,"
               " `length_stop` (longform/reasons.py)",
    "sections": "a planned paragraph: main point, planned words, the budget asked after re-allocation, text, words,"
                " continuations, `finish_reason`, whether the text so far was elided",
    "failures": "a failed sample: stage, reason (longform/reasons.py: `unparsable_plan`, `http_500`, `timeout`,"
                " `empty_content`, …), detail",
    "lengthen_steps": "a Self-Lengthen step: parent, iteration, round, role, words before/after, filter verdicts,"
                      " accepted, reason, text",
    "instruction_candidates": "a self-instruct candidate: attempt, instruction, kept or the reason not",
    "judgments": "a judge's answer: rubric or pairwise, judge model, sample(s), ratings and S_q or winner and"
                 " `p_first`, the signal it was read from (`logprobs` or the argmax), parse status, raw output",
    "filter_checks": "run × sample (or prompt) × filter: passed, reason",
    "length_fits": "run × judge × kind: φ (pairwise) or φ_s (rubric) with its 95% CI, or `not_identified` and why",
    "scores": "run × sample × metric: `quality`, `lc_quality`, `pairwise_logit`, `lc_pairwise_logit`,"
              " `pairwise_preference`",
    "selections": "a decision: `sft` (a sample) or `dpo` (a prompt's chosen and rejected), selected or not, the"
                  " reason and the scores it was made on",
    "gateau_measures": "GATEAU's measures of one (instruction, answer, models, settings), by their hash",
    "train_runs": "a `longform train` run: kind, dataset and its content hash, the run it came from, model, TRL"
                  " parameters, LoRA, rows, steps, final loss, output folder, status",
    "evals": "a model in one `longform eval`: label, source, backend, `train_id`, prompts file, settings, summary"
             " (S_l with bootstrap CIs, PM/FM, bounds kept, EOS and repetition rates, S_q)",
    "eval_answers": "an answer in an evaluation: model, prompt, `answer_key` (a rerun reuses it), text, words, what"
                    " was asked, S_l, `bound_ok`, tokens and cap, `finish_reason`, repetition checks, S_q or error",
    "eval_pairs": "evaluation × two models × metric: prompts both answered, mean paired difference, paired"
                  " bootstrap 95% CI",
    "run_stats": "run × stage: requests, retries, cache hits, tokens, truncated, errors by class, wall time"
                 " (rewritten every 2 s while the run is in progress)",
    "endpoint_stats": "run × pool × endpoint: state and why, adaptive limit, requests, attempts, failures, tokens,"
                      " errors (rewritten every 2 s)",
    "shard_attempts": "a run of one shard a sharded build submitted: attempt, flow run, worker, how it ended"
                      " (Completed, Crashed, Failed) and why, whether it resumed its shard's file",
    "schema_version": "an applied migration",
}


def field_notes(model: type[BaseModel]) -> dict[str, str]:
    """Each field's comment in longform/config.py: the comment lines just above it, or beside it."""
    source = inspect.getsource(config).splitlines()
    [cls] = [n for n in ast.parse("\n".join(source)).body if isinstance(n, ast.ClassDef) and n.name == model.__name__]
    notes = {}
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, i = [], node.lineno - 2
        while i >= 0 and source[i].strip().startswith("#"):
            above.insert(0, source[i].strip()[1:].strip())
            i -= 1
        line = source[node.end_lineno - 1]
        beside = line.split("  # ", 1)[1].strip() if "  # " in line else ""
        notes[node.target.id] = " ".join([*above, beside]).strip()
    return notes


def _type(annotation) -> str:
    text = str(annotation) if typing.get_origin(annotation) else getattr(annotation, "__name__", str(annotation))
    return text.replace("typing.", "").replace("pathlib.", "").replace("NoneType", "None").replace("|", "\\|")


def _default(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, Path):
        value = str(value)
    return f"`{value!r}`".replace("|", "\\|") if not isinstance(value, BaseModel) else "(a table)"


def config_page() -> str:
    lines = ["# Configuration reference", "",
             "Generated from `longform/config.py` by `docs/generate.py`: every key, its type, its default and",
             "the comment beside it in the code. All keys are optional; an unknown key is an error naming it.",
             "Relative paths resolve from the directory longform runs in. `[[endpoints]]` and",
             "`[[judges.endpoints]]` take the `[endpoint]` keys; `[train.sft]` / `[train.dpo]` take TRL's",
             "`SFTConfig` / `DPOConfig` parameters by TRL's names.", ""]
    missing = []
    for section, info in config.Settings.model_fields.items():
        model = typing.get_args(info.annotation)[0] if typing.get_origin(info.annotation) else info.annotation
        if section == "endpoints":
            continue  # the list form of [endpoint], documented with it
        notes = field_notes(model)
        lines += [f"## [{section}]", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            if name == "shard":
                continue  # set by longform on a shard's own runs, not for configs
            if not notes.get(name):
                missing.append(f"{model.__name__}.{name}")
            meaning = notes.get(name, "").replace("|", "\\|")
            lines.append(f"| `{name}` | {_type(field.annotation)} | {_default(field.default)} | {meaning} |")
        lines.append("")
    if missing:
        raise SystemExit(f"settings without a comment in longform/config.py: {', '.join(missing)}")
    return "\n".join(lines)


def tables_page() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "schema.duckdb"
        Store.open(db).close()
        with CorpusReads.open(db) as reads:
            tables = reads.table_columns()
    unknown, undocumented = sorted(set(TABLES) - set(tables)), sorted(set(tables) - set(TABLES))
    if unknown or undocumented:
        raise SystemExit(f"docs/generate.py TABLES: no such table {unknown}; undocumented {undocumented}")
    lines = ["# Tables", "",
             "Generated by `docs/generate.py` from a database this longform creates, so the columns are the",
             "schema's own. Lengths are never guessed: each stored length names its counter (`lbw_words`,",
             "LongBench-Write's: one unit per CJK character plus one per Latin word). Sample ids are",
             "deterministic and a request's cache key hashes everything that shapes its answer, so a rerun",
             "rewrites nothing and re-sends only what is new.", ""]
    for name in sorted(tables):
        lines += [f"## `{name}`", "", f"Each row: {TABLES[name]}.", "",
                  ", ".join(f"`{column}` {kind.lower()}" for column, kind in tables[name]), ""]
    return "\n".join(lines)


def benchmarks_page() -> str:
    page = (DOCS / "benchmarks.md").read_text()
    table = (ROOT / "benchmarks" / "results" / "table.md").read_text().strip()
    head, rest = page.split(BENCH_START, 1)
    _, tail = rest.split(BENCH_END, 1)
    return f"{head}{BENCH_START}\n{table}\n{BENCH_END}{tail}"


def pages() -> dict[Path, str]:
    return {DOCS / "reference" / "config.md": config_page(), DOCS / "reference" / "tables.md": tables_page(),
            DOCS / "benchmarks.md": benchmarks_page()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a committed page differs")
    stale = []
    for path, text in pages().items():
        if parser.parse_args().check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        raise SystemExit(f"out of date: {', '.join(stale)}; run `python docs/generate.py`")


if __name__ == "__main__":
    main()
