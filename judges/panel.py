"""The judges of one build, fed as prompts finish rather than after the whole batch.

A prompt's judgments start as soon as its last expected candidate is written, so judging overlaps
generation instead of waiting behind a barrier. They are asked grouped by the candidate shown
first: its rubric, then every pair that shows it as response A. The judges' templates open alike
up to response A (the header, the instruction, response A), so within a group each request extends
the prefix of the one before, and a server that keeps one prefix (the embedded llama.cpp server,
one request at a time) reads each candidate's text once per group instead of once per request.
Where a prompt's number of candidates is not known (builds that stop at N accepted samples), a
sample's rubric is its next step once it is written, and `judge_remaining` catches up the pairs.
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
            if prompt_id not in self._expected:
                await self._judge_rubric(candidate)
        if self._done[prompt_id] == self._expected.get(prompt_id):
            await self._judge_prompt(prompt_id)

    async def judge_remaining(self) -> None:
        await asyncio.gather(*(self._judge_prompt(p) for p in list(self._candidates)))

    async def _judge_prompt(self, prompt_id: str) -> None:
        """Every judgment of the prompt not yet asked, grouped by the candidate shown first."""
        ranked = [c for _, c in sorted(self._candidates[prompt_id], key=lambda oc: oc[0])]
        pairs = []
        if self._pairwise is not None and prompt_id not in self._pairs_done and len(ranked) >= 2:
            self._pairs_done.add(prompt_id)
            pairs = list(combinations(ranked, 2))[:self._cfg.max_pairs_per_prompt]
        orders = pairs + [(b, a) for a, b in pairs]
        asks = []
        for first in ranked:
            asks.append(self._judge_rubric(first))
            asks += [self._judge_order(a, b) for a, b in orders if a is first]
        # Started in this order; one at a time on a one-slot server (the limiter is first come, first
        # served among equals), so each group's requests follow each other there.
        await asyncio.gather(*asks)

    async def _judge_rubric(self, candidate: Candidate) -> None:
        if self._rubric is None or candidate.sample_id in self._rubric_done:
            return
        self._rubric_done.add(candidate.sample_id)
        self._record(await self._rubric.judge(candidate, self._run_id))

    async def _judge_order(self, first: Candidate, second: Candidate) -> None:
        self._record(await self._pairwise.judge_order(first, second, self._run_id))
