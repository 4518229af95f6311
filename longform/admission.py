"""Running candidates until enough are accepted, without starting more than could be needed.

Used by `longform build --until-accepted N`. Candidates run in a fixed order, at most
`max_active` at once; a new one starts only while accepted + running < target, so if everything
running is accepted the build ends with exactly N, and nothing accepted is ever thrown away. The
order is deterministic and answered requests are cached, so a restarted build walks the same
candidates (the finished ones cost nothing) and stops at the same place.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Iterable, TypeVar

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
