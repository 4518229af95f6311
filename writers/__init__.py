"""Writers turn prompts into long outputs by asking the engine; they never build clients."""

from __future__ import annotations

from typing import Callable, Sequence

from longform.checks import Check
from longform.config import Settings
from longform.engine import Engine


def writer_for(name: str, engine: Engine, settings: Settings, *, checks: Sequence[Callable[[str], Check]] = (),
               roles: dict[str, str] | None = None, iteration: int = 1):
    """The writer `[writers] enabled` names, on `engine`. `checks`, `roles` and `iteration` are
    Self-Lengthen's: the filters gating each round, the served model of each retrained role, and
    the macro iteration it writes."""
    from writers.agentwrite import AgentWrite
    from writers.self_lengthen import SelfLengthen

    if name == "self_lengthen":
        return SelfLengthen(engine, settings.self_lengthen, settings.generation, seed=settings.build.seed,
                            checks=checks, default_words=settings.agentwrite.default_words, roles=roles,
                            iteration=iteration)
    if name == "agentwrite":
        return AgentWrite(engine, settings.agentwrite, settings.generation, seed=settings.build.seed)
    raise ValueError(f"no writer {name!r}")  # the config refuses unknown names first
