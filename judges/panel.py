"""The judges of one build, fed as samples finish rather than after the whole batch.

A sample's rubric judgment is its next step once it is written. A prompt's pairwise judgments start
as soon as its last expected candidate is done, so judging overlaps generation instead of waiting
behind a barrier. `judge_remaining` catches up what no countdown triggered (builds that stop at N
accepted samples have no fixed number of candidates per prompt).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from itertools import combinations
from typing import Callable

from judges.material import Candidate
from judges.pairwise import PairwiseJudge
from judges.rubric import RubricJudge
from longform.config import JudgesConfig
from longform.engine import Engine


class JudgePanel:
    def __init__(self, engine: Engine, cfg: JudgesConfig, *, context_window: int, run_id: str,
                 record: Callable[[dict], None]):
        self._cfg = cfg
        self._run_id = run_id
        self._record_row = record
        self.judgment_ids: list[str] = []
        self._rubric = RubricJudge(engine, cfg, context_window) if cfg.rubric else None
        self._pairwise = PairwiseJudge(engine, cfg, context_window) if cfg.pairwise else None
        self._expected: dict[str, int] = {}
        self._done: dict[str, int] = defaultdict(int)
        self._candidates: dict[str, list[tuple[tuple, Candidate]]] = defaultdict(list)
        self._rubric_done: set[str] = set()
        self._pairs_done: set[str] = set()

    def _record(self, row: dict) -> None:
        self.judgment_ids.append(row["judgment_id"])
        self._record_row(row)

    @property
    def enabled(self) -> bool:
        return bool(self._rubric or self._pairwise)

    def expect(self, prompt_id: str, candidates: int) -> None:
        self._expected[prompt_id] = self._expected.get(prompt_id, 0) + candidates

    async def sample_done(self, prompt_id: str, order: tuple, candidate: Candidate | None) -> None:
        """`candidate` is None for a sample that failed; it still counts down its prompt."""
        self._done[prompt_id] += 1
        if candidate is not None:
            self._candidates[prompt_id].append((order, candidate))
            await self._judge_rubric(candidate)
        if self._done[prompt_id] == self._expected.get(prompt_id):
            await self._judge_pairs(prompt_id)

    async def judge_remaining(self) -> None:
        pending = [self._judge_rubric(c) for cs in self._candidates.values() for _, c in cs]
        pending += [self._judge_pairs(p) for p in list(self._candidates)]
        await asyncio.gather(*pending)

    async def _judge_rubric(self, candidate: Candidate) -> None:
        if self._rubric is None or candidate.sample_id in self._rubric_done:
            return
        self._rubric_done.add(candidate.sample_id)
        self._record(await self._rubric.judge(candidate, self._run_id))

    async def _judge_pairs(self, prompt_id: str) -> None:
        if self._pairwise is None or prompt_id in self._pairs_done:
            return
        ranked = [c for _, c in sorted(self._candidates[prompt_id], key=lambda oc: oc[0])]
        if len(ranked) < 2:
            return
        self._pairs_done.add(prompt_id)
        pairs = list(combinations(ranked, 2))[:self._cfg.max_pairs_per_prompt]
        for rows in await asyncio.gather(*(self._pairwise.judge(a, b, self._run_id) for a, b in pairs)):
            for row in rows:
                self._record(row)
