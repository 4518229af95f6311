"""The store's direct writes: the few rows written at once rather than batched (a run and its
counters, training runs, evaluations) and the redo of a run's checks and selections."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from longform.clock import now
from longform.provenance import versions
from longform.store.appends import cell
from longform.store.schema import APPEND_TABLES


class Bookkeeping:
    """Mixed into Store: `_con` is its connection, `flush()` commits the append buffer first."""

    def start_run(self, run_id: str, name: str, config: dict, prompts_path: str | None,
                  prefect_flow_run_id: str | None) -> None:
        self._con.execute(
            "INSERT INTO runs (run_id, name, status, config, prompts_path, prefect_flow_run_id, started_at, versions)"
            " VALUES (?, ?, 'running', ?, ?, ?, ?, ?)",
            [run_id, name, json.dumps(config), prompts_path, prefect_flow_run_id, now(), json.dumps(versions())],
        )

    def interrupt_stale_runs(self) -> list[tuple[str, str]]:
        """Runs left `running` by a killed build, now marked `interrupted`: (run_id, name).

        Only a process holding the write lock calls this, so no `running` run is alive.
        """
        return self._con.execute(
            "UPDATE runs SET status = 'interrupted', finished_at = ? WHERE status = 'running'"
            " RETURNING run_id, name", [now()]).fetchall()

    def put_run_stats(self, run_id: str, stages: dict[str, dict]) -> None:
        """Replace the run's per-stage counters (they are totals so far, not increments)."""
        rows = [[run_id, stage, s["requests"], s["attempts"], s["cache_hits"], s["tokens_in"], s["tokens_out"],
                 s["truncated"], json.dumps(s["errors"]), s["wall_s"], now()] for stage, s in stages.items()]
        if rows:
            self._con.executemany("INSERT OR REPLACE INTO run_stats VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def put_endpoint_stats(self, run_id: str, endpoints: list[dict]) -> None:
        """Replace the run's per-endpoint counters and states (totals so far)."""
        rows = [[run_id, e["pool"], e["endpoint"], e["state"], e["reason"] or None, e["concurrency"], e["requests"],
                 e["attempts"], e["failed_attempts"], e["tokens_in"], e["tokens_out"], json.dumps(e["errors"]),
                 e["wall_s"], now()] for e in endpoints]
        if rows:
            self._con.executemany("INSERT OR REPLACE INTO endpoint_stats VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                  rows)

    def finish_run(self, run_id: str, status: str, summary: dict) -> None:
        self.flush()
        self._con.execute(
            "UPDATE runs SET status = ?, finished_at = ?, summary = ? WHERE run_id = ?",
            [status, now(), json.dumps(summary), run_id],
        )

    def put_train_run(self, row: dict) -> None:
        """Insert or update a training run (few rows, written at once)."""
        columns = ("train_id", "kind", "dataset", "model", "model_path", "params", "lora", "rows", "status",
                   "steps", "final_loss", "output_dir", "error", "dataset_hash", "source_run_id")
        values = [row.get(c) for c in columns]
        self._con.execute(
            f"INSERT INTO train_runs ({', '.join(columns)}, started_at) VALUES ({', '.join('?' * len(columns))}, ?)"
            " ON CONFLICT (train_id) DO UPDATE SET status = excluded.status, steps = excluded.steps,"
            " final_loss = excluded.final_loss, error = excluded.error, finished_at = ?",
            [*values, now(), now()])

    def train_id_for(self, output_dir: Path) -> str | None:
        """The finished training run that saved a model in `output_dir`, if this database has one."""
        self.flush()
        found = self._con.execute("SELECT train_id FROM train_runs WHERE output_dir = ? AND status = 'finished'"
                                  " ORDER BY finished_at DESC LIMIT 1", [str(output_dir)]).fetchall()
        return found[0][0] if found else None

    def put_eval(self, row: dict, pairs: list[dict]) -> None:
        """One evaluated model's row, and the paired differences the evaluation measured so far
        (a row at a time: an evaluation has a few models)."""
        self.flush()
        columns = ("eval_id", "model", "source", "backend", "train_id", "prompts_path", "settings", "summary")
        self._con.execute(
            f"INSERT OR REPLACE INTO evals ({', '.join(columns)}, created_at) VALUES ({', '.join('?' * len(columns))}, ?)",
            [cell(row.get(c)) for c in columns] + [now()])
        columns = ("eval_id", "model_a", "model_b", "metric", "n", "mean_diff", "ci_low", "ci_high")
        for pair in pairs:
            self._con.execute(f"INSERT OR REPLACE INTO eval_pairs ({', '.join(columns)}, created_at)"
                              f" VALUES ({', '.join('?' * len(columns))}, ?)", [pair.get(c) for c in columns] + [now()])

    def set_eval_quality(self, eval_id: str, rows: list[tuple[str, str, float | None, str]]) -> None:
        """S_q judged after the answers were stored: (model, prompt_id, quality, judge model) each."""
        self.flush()
        self._con.executemany("UPDATE eval_answers SET quality = ?, judge_model = ? WHERE eval_id = ? AND model = ?"
                              " AND prompt_id = ?", [[q, judge, eval_id, model, prompt] for model, prompt, q, judge in rows])

    def eval_answers_by_key(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """Answers already generated (not failed) under these answer keys, whatever evaluation asked them."""
        columns = APPEND_TABLES["eval_answers"]
        with self._id_table("_keys", keys):
            found = self._con.execute(f"SELECT {', '.join(columns)} FROM eval_answers JOIN _keys ON answer_key = _keys.id"
                                      " WHERE error IS NULL ORDER BY created_at").fetchall()
        return {row[columns.index("answer_key")]: dict(zip(columns, row)) for row in found}

    def replace_checks(self, run_id: str, filter_name: str, rows: list[dict]) -> None:
        """A run's checks of one filter, redone: the earlier ones go (an export run twice counts once)."""
        self.flush()
        self._con.execute("DELETE FROM filter_checks WHERE run_id = ? AND filter = ?", [run_id, filter_name])
        self.add_many("filter_checks", rows)
        self.flush()

    def clear_selection(self, run_id: str, purpose: str, metrics: list[str]) -> None:
        """Drop a run's earlier decisions of one kind, and the scores they were made on, before redoing them."""
        self.flush()
        self._con.execute("DELETE FROM selections WHERE run_id = ? AND purpose = ?", [run_id, purpose])
        self._con.execute("DELETE FROM scores WHERE run_id = ? AND list_contains(?, metric)", [run_id, metrics])
