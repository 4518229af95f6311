"""Which samples a build writes, in what order, and running candidates until enough are accepted.

Used by `longform build --until-accepted N`. Candidates run in a fixed order, at most
`max_active` at once; a new one starts only while accepted + running < target, so if everything
running is accepted the build ends with exactly N, and nothing accepted is ever thrown away. The
order is deterministic and answered requests are cached, so a restarted build walks the same
candidates (the finished ones cost nothing) and stops at the same place.
"""

from __future__ import annotations

import asyncio
from itertools import count, islice
from typing import Awaitable, Callable, Iterable, TypeVar

from longform.length_reader import spec_for
from longform.prompts import Prompt

T = TypeVar("T")


async def run_until_accepted(candidates: Iterable[T], work: Callable[[T], Awaitable[bool]], *,
                             target: int, max_active: int) -> tuple[int, int]:
    """(accepted, started). `work` returns whether its candidate was accepted."""
    pending = iter(candidates)
    running: set[asyncio.Task] = set()
    accepted = started = 0
    exhausted = False
    try:
        while True:
            while not exhausted and len(running) < max_active and accepted + len(running) < target:
                candidate = next(pending, None)
                if candidate is None:
                    exhausted = True
                    break
                running.add(asyncio.ensure_future(work(candidate)))
                started += 1
            if not running:
                return accepted, started
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                accepted += int(task.result())
    finally:
        # An error in one candidate ends the run: let the others record what they have, then stop.
        if running:
            await asyncio.gather(*running, return_exceptions=True)


def longest_first(prompts: list[Prompt], samples_per_prompt: int, default_words: int) -> list[tuple[Prompt, int]]:
    """Every (prompt, sample index) of a build, the longest answers first: like the engine's slot
    order, admission puts the critical path first."""
    items = ((p, i) for p in prompts for i in range(samples_per_prompt))
    return sorted(items, key=lambda item: -spec_for(item[0], default_words).aim)


def candidate_order(prompts: list[Prompt], target: int, budget: int | None) -> list[tuple[Prompt, int]]:
    """`--until-accepted`'s candidates: every prompt's sample 0, then every prompt's sample 1, …,
    at most `budget` of them (default 4 × target)."""
    return list(islice(((p, k) for k in count() for p in prompts), budget or 4 * target))


def accepted(measured: dict, min_length_score: float) -> bool:
    """What `--until-accepted` counts: a sample over the length floor that keeps its bound (judges
    and filters come after the build, over the whole corpus)."""
    return measured["length_score"] >= min_length_score and measured["bound_ok"] is not False
