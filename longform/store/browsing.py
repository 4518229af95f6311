"""Named, parameterised reads of a corpus, for `longform view` (and anything else that reads).

Every value from a user arrives as a bound parameter; the only things spliced into SQL text are
names picked from fixed lists here (sort columns, directions). Reads go through `read_query`, so
while a build holds the database they are answered by the build itself (writer_channel.py) and the
viewer never fights the writer for the file.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from longform.store.sql_guard import Query
from longform.store.read_access import reading

PAGE_SIZE = 50
SORTS = {"created": "s.created_at", "words": "s.words", "score": "s.length_score", "required": "s.required_words",
         "prompt": "s.prompt_id", "writer": "s.writer"}


@dataclass(frozen=True)
class SampleFilter:
    run: str | None = None
    writer: str | None = None
    prompt: str | None = None
    sl_min: float | None = None
    sl_max: float | None = None
    selected: bool | None = None
    failed_filter: str | None = None
    sort: str = "created"
    descending: bool = True
    page: int = 1

    def where(self) -> tuple[str, list[Any]]:
        clauses, params = [], []
        if self.run:
            clauses.append("(s.run_id = ? OR s.sample_id IN (SELECT sample_id FROM selections"
                           " WHERE run_id = ? AND purpose = 'sft'))")
            params += [self.run, self.run]
        for column, value in (("s.writer", self.writer), ("s.prompt_id", self.prompt)):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.sl_min is not None:
            clauses.append("s.length_score >= ?")
            params.append(self.sl_min)
        if self.sl_max is not None:
            clauses.append("s.length_score <= ?")
            params.append(self.sl_max)
        if self.selected is not None:
            run_clause = " AND run_id = ?" if self.run else ""
            clauses.append(f"{'' if self.selected else 'NOT '}EXISTS (SELECT 1 FROM selections"
                           f" WHERE sample_id = s.sample_id AND purpose = 'sft' AND selected{run_clause})")
            params += [self.run] if self.run else []
        if self.failed_filter:
            clauses.append("EXISTS (SELECT 1 FROM filter_checks WHERE subject_id = s.sample_id AND NOT passed"
                           " AND filter = ?)")
            params.append(self.failed_filter)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


@dataclass
class Page:
    rows: list[dict]
    total: int
    page: int
    pages: int
    extra: dict = field(default_factory=dict)


class CorpusReads:
    """The reads of one unit of work (a page), on one read-only connection: `with CorpusReads.open(db)`."""

    def __init__(self, query: Query):
        self._query = query

    @classmethod
    @contextmanager
    def open(cls, db: Path) -> Iterator["CorpusReads"]:
        with reading(db) as query:
            yield cls(query)

    def _rows(self, sql: str, params: list[Any] | None = None, *, json: tuple[str, ...] = ()) -> list[dict]:
        """Rows as dicts; the `json` columns decoded (an empty object where NULL)."""
        columns, rows = self._query(sql, params)
        found = [dict(zip(columns, r)) for r in rows]
        for row in found:
            for column in json:
                row[column] = _json(row[column]) or {}
        return found

    def _one(self, sql: str, params: list[Any], *, json: tuple[str, ...] = ()) -> dict | None:
        found = self._rows(sql, params, json=json)
        return found[0] if found else None

    # --- runs ---------------------------------------------------------------------------------

    def shard_attempts(self, run_id: str) -> list[dict]:
        return self._rows("SELECT shard, attempt, state, worker, flow_run_name, file_found, message, started_at,"
                          " ended_at FROM shard_attempts WHERE run_id = ? ORDER BY shard, attempt", [run_id])

    def table_columns(self) -> dict[str, list[tuple[str, str]]]:
        """Every table of the schema with its (column, type) in order: the documented tables page."""
        rows = self._rows("SELECT table_name, column_name, data_type FROM information_schema.columns"
                          " WHERE table_schema = 'main' ORDER BY table_name, ordinal_position")
        tables: dict[str, list[tuple[str, str]]] = {}
        for r in rows:
            tables.setdefault(r["table_name"], []).append((r["column_name"], r["data_type"]))
        return tables

    def schema_version(self) -> int:
        [row] = self._rows("SELECT coalesce(max(version), 0) AS v FROM schema_version")
        return row["v"]

    def latest_run(self, run_id: str | None = None) -> dict | None:
        """A run (or, by default, the latest build run, not a shard run a sharded build merged in)."""
        where, params = ("run_id = ?", [run_id]) if run_id else ("json_extract_string(config, '$.build.shard') IS NULL", [])
        return self._one(f"SELECT run_id, name, status, started_at, finished_at, config FROM runs WHERE {where}"
                         " ORDER BY started_at DESC LIMIT 1", params, json=("config",))

    def scored_run(self, run_id: str | None = None) -> dict | None:
        """A run that has made selections (or the latest such run)."""
        where, params = (" AND run_id = ?", [run_id]) if run_id else ("", [])
        return self._one("SELECT run_id, name, config FROM runs WHERE run_id IN (SELECT run_id FROM selections)"
                         f"{where} ORDER BY started_at DESC LIMIT 1", params, json=("config",))

    def stage_stats(self, run_id: str) -> list[dict]:
        return self._rows("SELECT stage, requests, cache_hits, attempts, tokens_in, tokens_out, truncated, errors,"
                          " wall_s, updated_at FROM run_stats WHERE run_id = ? ORDER BY stage", [run_id], json=("errors",))

    def endpoint_stats(self, run_id: str) -> list[dict]:
        return self._rows("SELECT pool, endpoint, state, reason, concurrency, requests, attempts, failed_attempts,"
                          " tokens_out, errors, wall_s FROM endpoint_stats WHERE run_id = ? ORDER BY pool, endpoint",
                          [run_id], json=("errors",))

    def progress(self) -> dict:
        """The latest run's state and the database's row counts (a shard, read while it writes)."""
        return self._one("SELECT (SELECT status FROM runs ORDER BY started_at DESC LIMIT 1) AS state,"
                         " (SELECT count(*) FROM samples) AS samples, (SELECT count(*) FROM failures) AS failures,"
                         " (SELECT count(*) FROM requests) AS requests", [])

    def runs(self) -> list[dict]:
        return self._rows("""
            SELECT r.run_id, r.name, r.status, r.started_at, r.finished_at,
                   (SELECT count(*) FROM samples s WHERE s.run_id = r.run_id) AS written,
                   (SELECT count(*) FROM failures f WHERE f.run_id = r.run_id) AS failures,
                   (SELECT count(*) FROM selections x WHERE x.run_id = r.run_id AND x.purpose = 'sft' AND x.selected) AS sft,
                   (SELECT count(*) FROM selections x WHERE x.run_id = r.run_id AND x.purpose = 'dpo' AND x.selected) AS dpo
            FROM runs r ORDER BY r.started_at DESC""")

    def run(self, run_id: str) -> dict | None:
        run = self._one("SELECT run_id, name, status, started_at, finished_at, summary, versions FROM runs"
                        " WHERE run_id = ?", [run_id], json=("summary", "versions"))
        if run is None:
            return None
        run["stages"] = self._rows("SELECT stage, requests, attempts, cache_hits, tokens_in, tokens_out, truncated,"
                                   " errors, wall_s FROM run_stats WHERE run_id = ? ORDER BY stage", [run_id])
        run["fits"] = self._rows("SELECT judge_model, kind, status, reason, n, phi, ci_low, ci_high FROM length_fits"
                                 " WHERE run_id = ? ORDER BY kind", [run_id])
        run["dpo"] = self._rows("SELECT selection_id, prompt_id, sample_id, rejected_sample_id, selected, reason"
                                " FROM selections WHERE run_id = ? AND purpose = 'dpo' ORDER BY prompt_id", [run_id])
        run["points"] = self._rows("""
            SELECT s.sample_id, s.words, s.required_words, s.length_score, q.value AS quality
            FROM selections x JOIN samples s USING (sample_id)
            LEFT JOIN scores q ON q.run_id = x.run_id AND q.sample_id = s.sample_id AND q.metric = 'quality'
            WHERE x.run_id = ? AND x.purpose = 'sft'""", [run_id])
        return run

    # --- samples ------------------------------------------------------------------------------

    def samples(self, f: SampleFilter) -> Page:
        where, params = f.where()
        [count] = self._rows(f"SELECT count(*) AS n FROM samples s{where}", params)
        pages = max(1, -(-count["n"] // PAGE_SIZE))
        page = min(max(1, f.page), pages)
        order = f"{SORTS.get(f.sort, SORTS['created'])} {'DESC' if f.descending else 'ASC'}, s.sample_id"
        rows = self._rows(
            f"SELECT s.sample_id, s.prompt_id, s.run_id, s.writer, s.words, s.required_words, s.length_kind,"
            f" s.length_score, s.bound_ok, s.created_at FROM samples s{where} ORDER BY {order}"
            f" LIMIT {PAGE_SIZE} OFFSET {(page - 1) * PAGE_SIZE}", params)
        if rows:
            # Per page only: the decision shown beside each row. A list parameter, not a registered
            # Arrow table: these reads may be answered by a build over the live-read channel, which
            # carries JSON parameters, and a page holds at most PAGE_SIZE ids.
            ids = [r["sample_id"] for r in rows]
            decided = {d["sample_id"]: d for d in self._rows(
                "SELECT sample_id, bool_or(selected) AS selected FROM selections WHERE purpose = 'sft'"
                " AND list_contains(?, sample_id)" + (" AND run_id = ?" if f.run else "") + " GROUP BY sample_id",
                [ids] + ([f.run] if f.run else []))}
            for r in rows:
                r["selected"] = decided.get(r["sample_id"], {}).get("selected")
        return Page(rows, count["n"], page, pages)

    def facets(self) -> dict[str, list[str]]:
        """Choices for the samples page's filters."""
        return {"runs": [r["run_id"] for r in self._rows("SELECT run_id FROM runs ORDER BY started_at DESC")],
                "writers": [r["writer"] for r in self._rows("SELECT DISTINCT writer FROM samples ORDER BY 1")],
                "filters": [r["filter"] for r in self._rows("SELECT DISTINCT filter FROM filter_checks"
                                                            " WHERE subject = 'sample' ORDER BY 1")]}

    def sample(self, sample_id: str) -> dict | None:
        sample = self._one("""
            SELECT s.*, p.instruction, p.target_words, p.min_words, p.max_words
            FROM samples s LEFT JOIN prompts p USING (prompt_id) WHERE s.sample_id = ?""", [sample_id])
        if sample is None:
            return None
        sample["sections"] = self._rows(
            "SELECT idx, main_point, planned_words, budget_words, text, words, continuations, finish_reason, elided"
            " FROM sections WHERE sample_id = ? ORDER BY idx", [sample_id])
        sample["chain"] = self._rows(
            "SELECT step_id, parent_step_id, iteration, round, role, words_before, words_after, verdicts, accepted,"
            " reason, finish_reason FROM lengthen_steps WHERE sample_id = ? ORDER BY iteration, round, created_at",
            [sample_id], json=("verdicts",))
        sample["judgments"] = self._rows(
            "SELECT judgment_id, kind, judge_model, sample_id, other_sample_id, scores, quality, expected_quality,"
            " winner, p_first, signal, parse_status, raw FROM judgments"
            " WHERE sample_id = ? OR other_sample_id = ? ORDER BY kind, created_at", [sample_id, sample_id])
        sample["scores"] = self._rows("SELECT run_id, metric, value, source FROM scores WHERE sample_id = ?"
                                      " ORDER BY run_id, metric", [sample_id])
        sample["checks"] = self._rows(
            "SELECT run_id, filter, passed, reason FROM filter_checks WHERE subject_id IN (?, ?)"
            " ORDER BY run_id, passed, filter", [sample_id, sample["prompt_id"]])
        sample["selections"] = self._rows(
            "SELECT selection_id, run_id, purpose, sample_id, rejected_sample_id, selected, reason, scores"
            " FROM selections WHERE sample_id = ? OR rejected_sample_id = ? ORDER BY run_id, purpose",
            [sample_id, sample_id])
        sample["requests"] = self._rows(
            "SELECT stage, section, tokens_in, tokens_out, latency_s, attempts, finish_reason, error, endpoint"
            " FROM requests WHERE sample_id = ? ORDER BY created_at", [sample_id])
        return sample

    def prompt(self, prompt_id: str) -> dict | None:
        prompt = self._one("SELECT prompt_id, instruction, target_words, min_words, max_words, source FROM prompts"
                           " WHERE prompt_id = ?", [prompt_id])
        if prompt is None:
            return None
        prompt["candidates"] = self._rows("""
            SELECT s.sample_id, s.writer, s.model, s.sample_index, s.words, s.required_words, s.length_kind,
                   s.length_score, s.bound_ok, s.text, q.value AS quality, lq.value AS lc_quality
            FROM samples s
            LEFT JOIN (SELECT sample_id, max(value) AS value FROM scores WHERE metric = 'quality' GROUP BY 1) q
                USING (sample_id)
            LEFT JOIN (SELECT sample_id, max(value) AS value FROM scores WHERE metric = 'lc_quality' GROUP BY 1) lq
                USING (sample_id)
            WHERE s.prompt_id = ? ORDER BY s.words DESC, s.sample_id""", [prompt_id])
        prompt["failures"] = self._rows("SELECT run_id, stage, reason, detail, sample_id FROM failures"
                                        " WHERE prompt_id = ? ORDER BY created_at", [prompt_id])
        return prompt

    def pair(self, selection_id: str) -> dict | None:
        pair = self._one("SELECT selection_id, run_id, prompt_id, sample_id, rejected_sample_id, selected, reason,"
                         " scores FROM selections WHERE selection_id = ? AND purpose = 'dpo'", [selection_id],
                         json=("scores",))
        if pair is None:
            return None
        ids = [pair["sample_id"], pair["rejected_sample_id"]]
        texts = {r["sample_id"]: r for r in self._rows(
            "SELECT sample_id, text, words, length_score FROM samples WHERE list_contains(?, sample_id)",
            [[i for i in ids if i]])}
        pair["chosen"], pair["rejected"] = texts.get(ids[0]), texts.get(ids[1])
        pair["instruction"] = (self._one("SELECT instruction FROM prompts WHERE prompt_id = ?",
                                         [pair["prompt_id"]]) or {}).get("instruction")
        return pair

    def report(self, run_id: str) -> dict:
        """What `longform report` draws for one run (judges/report.py)."""
        p = [run_id]
        return {
            "run": self._one("SELECT run_id, name, status, started_at, finished_at, config FROM runs WHERE run_id = ?", p),
            "samples": self._rows("""
                SELECT s.sample_id, s.prompt_id, s.writer, s.model, s.words, s.required_words, s.length_score,
                       q.value AS quality, lq.value AS lc_quality, sel.selected
                FROM selections sel JOIN samples s USING (sample_id)
                LEFT JOIN scores q ON q.run_id = sel.run_id AND q.sample_id = s.sample_id AND q.metric = 'quality'
                LEFT JOIN scores lq ON lq.run_id = sel.run_id AND lq.sample_id = s.sample_id AND lq.metric = 'lc_quality'
                WHERE sel.run_id = ? AND sel.purpose = 'sft' ORDER BY s.sample_id""", p),
            "fits": self._rows("SELECT judge_model, kind, status, reason, n, phi, ci_low, ci_high, scale, detail"
                               " FROM length_fits WHERE run_id = ? ORDER BY kind", p),
            "checks": self._rows("SELECT subject, filter, passed FROM filter_checks WHERE run_id = ?", p),
            "dpo": self._rows("SELECT prompt_id, selected, reason FROM selections WHERE run_id = ? AND purpose = 'dpo'"
                              " ORDER BY prompt_id", p),
            "judged": self._rows("""
                SELECT j.kind, j.parse_status, count(*) AS n FROM judgments j
                WHERE j.sample_id IN (SELECT sample_id FROM selections WHERE run_id = ? AND purpose = 'sft')
                GROUP BY ALL ORDER BY ALL""", p),
        }

    # --- evaluations (`longform eval`) ----------------------------------------------------------

    def evals(self) -> list[dict]:
        """Every evaluation, newest first: its models (with their mean S_l) and prompt count."""
        found = self._rows("SELECT eval_id, model, backend, train_id, prompts_path, summary, created_at FROM evals"
                           " ORDER BY created_at DESC, model", json=("summary",))
        out: dict[str, dict] = {}
        for row in found:
            entry = out.setdefault(row["eval_id"], {"eval_id": row["eval_id"], "created_at": row["created_at"],
                                                    "prompts_path": row["prompts_path"], "models": []})
            entry["models"].append(row)
        return list(out.values())

    def eval(self, eval_id: str) -> dict | None:
        models = self._rows("SELECT model, source, backend, train_id, prompts_path, settings, summary, created_at"
                            " FROM evals WHERE eval_id = ? ORDER BY created_at, model", [eval_id],
                            json=("settings", "summary"))
        if not models:
            return None
        return {
            "eval_id": eval_id, "models": models,
            "pairs": self._rows("SELECT model_a, model_b, metric, n, mean_diff, ci_low, ci_high FROM eval_pairs"
                                " WHERE eval_id = ? ORDER BY model_a, model_b, metric", [eval_id]),
            "answers": self._rows("SELECT model, prompt_id, instruction, required_words, length_kind, length_low,"
                                  " length_high, words, length_score, bound_ok, finish_reason, tokens_out, max_tokens,"
                                  " repeated_ngram, repeated_paragraphs, quality, error, text FROM eval_answers"
                                  " WHERE eval_id = ? ORDER BY prompt_id, model", [eval_id]),
        }

    def failures(self, run: str | None) -> dict:
        where, params = (" WHERE run_id = ?", [run]) if run else ("", [])
        return {"groups": self._rows(f"SELECT stage, reason, count(*) AS n FROM failures{where}"
                                     " GROUP BY ALL ORDER BY n DESC, stage, reason", params),
                "rows": self._rows(f"SELECT run_id, stage, reason, prompt_id, sample_id, detail FROM failures{where}"
                                   " ORDER BY stage, reason, created_at LIMIT 500", params)}


def provenance_queries(run_id: str) -> list[str]:
    """SQL a dataset card shows, for following an exported row back to its sections and its decision."""
    return ["select * from sections where sample_id = '<sample_id>' order by idx;",
            f"select * from selections where run_id = '{run_id}' and '<sample_id>' in (sample_id, rejected_sample_id);"]


def _json(value: Any) -> Any:
    if value is None or not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value
