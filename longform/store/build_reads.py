"""Named reads the pipeline's stages make of the database they are writing.

Stages ask for what they need by name; the SQL stays here. Id lists are joined as a registered
Arrow table (one scan, any length) rather than spliced or passed as a list parameter.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Iterator

import pyarrow as pa

# What scoring reads of a sample and of a judgment (judges/scoring.py).
SCORED_SAMPLE = ("sample_id", "prompt_id", "text", "words", "required_words", "length_score", "writer", "model",
                 "length_kind", "length_low", "length_high", "length_unit", "bound_ok")
JUDGMENT = ("kind", "prompt_id", "sample_id", "other_sample_id", "quality", "winner", "p_first", "expected_quality")


class PipelineReads:
    """Mixed into `Store`: `_rows(sql, params)` flushes first, so a read sees every row added."""

    def _rows(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        raise NotImplementedError

    @contextmanager
    def _id_table(self, name: str, ids: list[str]) -> Iterator[None]:
        raise NotImplementedError

    def _dicts(self, columns: tuple[str, ...], rows: list[tuple]) -> list[dict]:
        return [dict(zip(columns, r)) for r in rows]

    # --- prompts -------------------------------------------------------------------------------

    def instructions(self) -> list[str]:
        """Every registered instruction (self-instruct keeps new ones apart from them)."""
        return [instruction for _, instruction in self.prompts_oldest_first()]

    def prompts_oldest_first(self) -> list[tuple[str, str]]:
        """(prompt_id, instruction), earliest registered first: the first of two near-duplicates keeps its place."""
        return self._rows("SELECT prompt_id, instruction FROM prompts ORDER BY created_at, prompt_id")

    def known_prompts(self, prompt_ids: list[str]) -> dict[str, tuple]:
        """prompt_id → (instruction, target_words, min_words, max_words) for those already stored."""
        with self._id_table("_prompt_ids", prompt_ids):
            rows = self._rows("SELECT prompt_id, instruction, target_words, min_words, max_words FROM prompts"
                              " JOIN _prompt_ids ON prompt_id = _prompt_ids.id")
        return {r[0]: tuple(r[1:]) for r in rows}

    # --- samples and judgments ----------------------------------------------------------------

    def existing_sample_ids(self, sample_ids: list[str]) -> set[str]:
        with self._id_table("_sample_ids", sample_ids):
            return {r[0] for r in self._rows("SELECT sample_id FROM samples JOIN _sample_ids ON sample_id = _sample_ids.id")}

    def scored_samples(self, sample_ids: list[str]) -> list[dict]:
        """What scoring needs of each sample (SCORED_SAMPLE), in prompt and sample order."""
        with self._id_table("_sample_ids", sample_ids):
            rows = self._rows(f"SELECT {', '.join('s.' + c for c in SCORED_SAMPLE)} FROM samples s"
                              " JOIN _sample_ids ON s.sample_id = _sample_ids.id"
                              " ORDER BY s.prompt_id, s.sample_index, s.sample_id")
        return self._dicts(SCORED_SAMPLE, rows)

    def judgments(self, judgment_ids: list[str]) -> list[dict]:
        with self._id_table("_judgment_ids", judgment_ids):
            rows = self._rows(f"SELECT {', '.join('j.' + c for c in JUDGMENT)} FROM judgments j"
                              " JOIN _judgment_ids ON j.judgment_id = _judgment_ids.id ORDER BY j.judgment_id")
        return self._dicts(JUDGMENT, rows)

    def lengthen_pairs(self, sample_ids: list[str], iteration: int, writer: str) -> list[tuple[str, str, str]]:
        """(instruction, the generator's first answer, the final text) of a Self-Lengthen iteration's samples."""
        with self._id_table("_sample_ids", sample_ids):
            return self._rows(
                "SELECT p.instruction, g.text AS first, s.text AS final FROM samples s"
                " JOIN _sample_ids ON s.sample_id = _sample_ids.id"
                " JOIN prompts p USING (prompt_id)"
                " JOIN lengthen_steps g ON g.sample_id = s.sample_id AND g.role = 'generator' AND g.iteration = ?"
                " WHERE s.writer = ? ORDER BY s.sample_id", [iteration, writer])

    # --- a run's selection ---------------------------------------------------------------------

    def sft_picks(self, run_id: str) -> list[tuple[str, str, str, str]]:
        """(sample_id, instruction, text, prompt_id) of the run's SFT picks (what GATEAU ranks)."""
        return self._rows(
            "SELECT s.sample_id, p.instruction, s.text, s.prompt_id FROM selections sel JOIN samples s USING (sample_id)"
            " JOIN prompts p ON p.prompt_id = s.prompt_id"
            " WHERE sel.run_id = ? AND sel.purpose = 'sft' AND sel.selected ORDER BY s.sample_id", [run_id])

    def sft_purpose(self, run_id: str) -> str:
        """GATEAU's selection where the run has one (it ranks what the SFT policy kept), else the SFT policy's."""
        [(gateau,)] = self._rows("SELECT count(*) FROM selections WHERE run_id = ? AND purpose = 'gateau'", [run_id])
        return "gateau" if gateau else "sft"

    def selected_sft(self, run_id: str) -> list[dict]:
        columns = ("sample_id", "prompt_id", "instruction", "text", "words", "length_counter", "required_words",
                   "length_score", "writer", "model", "length_kind", "length_low", "length_high", "length_unit")
        rows = self._rows(
            "SELECT s.sample_id, s.prompt_id, p.instruction, s.text, s.words, s.length_counter, s.required_words,"
            " s.length_score, s.writer, s.model, s.length_kind, s.length_low, s.length_high, s.length_unit"
            " FROM selections sel JOIN samples s USING (sample_id) JOIN prompts p ON p.prompt_id = s.prompt_id"
            " WHERE sel.run_id = ? AND sel.purpose = ? AND sel.selected ORDER BY s.prompt_id, s.sample_index",
            [run_id, self.sft_purpose(run_id)])
        return self._dicts(columns, rows)

    def selected_dpo(self, run_id: str) -> list[dict]:
        columns = ("prompt_id", "instruction", "chosen_text", "rejected_text", "chosen_sample_id",
                   "rejected_sample_id", "chosen_words", "rejected_words", "scores", "length_kind", "length_low",
                   "length_high", "length_unit")
        rows = self._rows(
            "SELECT sel.prompt_id, p.instruction, c.text, r.text, sel.sample_id, sel.rejected_sample_id, c.words,"
            " r.words, sel.scores, c.length_kind, c.length_low, c.length_high, c.length_unit"
            " FROM selections sel JOIN prompts p USING (prompt_id)"
            " JOIN samples c ON c.sample_id = sel.sample_id JOIN samples r ON r.sample_id = sel.rejected_sample_id"
            " WHERE sel.run_id = ? AND sel.purpose = 'dpo' AND sel.selected ORDER BY sel.prompt_id", [run_id])
        out = self._dicts(columns, rows)
        for r in out:
            r["scores"] = r["scores"] if isinstance(r["scores"], str) else json.dumps(r["scores"])
        return out

    def plans(self, sample_ids: list[str]) -> dict[str, list[tuple[str, int]]]:
        """Each sample's plan, as written: (main point, planned words) per section, in order."""
        out: dict[str, list[tuple[str, int]]] = {}
        with self._id_table("_plan_ids", sample_ids):
            for sample_id, point, words in self._rows(
                    "SELECT sample_id, main_point, planned_words FROM sections JOIN _plan_ids ON sample_id = _plan_ids.id"
                    " WHERE main_point IS NOT NULL ORDER BY sample_id, idx"):
                out.setdefault(sample_id, []).append((point, words))
        return out

    def models_of(self, run_id: str) -> dict[str, list[str]]:
        """The models that wrote a run's selection and the judges that scored it."""
        generation = self._rows("SELECT DISTINCT s.model FROM selections sel JOIN samples s USING (sample_id)"
                                " WHERE sel.run_id = ? ORDER BY 1", [run_id])
        judges = self._rows("SELECT DISTINCT judge_model FROM length_fits WHERE run_id = ? ORDER BY 1", [run_id])
        return {"generation": [r[0] for r in generation], "judge": [r[0] for r in judges]}


def id_table(ids: list[str]) -> pa.Table:
    return pa.table({"id": pa.array(list(ids), pa.string())})
