"""What every build composes, sharded or not: the write stages (register, write with judging as
samples finish, Self-Lengthen's iterations) and the corpus-wide stages run once over everything
written. Composition only: each stage calls the writer, judge or session that decides."""

from __future__ import annotations

from flows.stages import (expand_instructions, export_stage, gateau_stage, gather_all, judge_panel, judge_remaining,
                          lengthen_iteration, register_prompts, retrain_roles, score_and_select, self_lengthen_data,
                          write_shard, write_until_accepted)
from judges.panel import JudgePanel
from longform.build.admission import longest_first
from longform.build.reporting import reporter
from longform.build.session import BuildSession
from longform.prompts import Prompt


async def write_stages(session: BuildSession, prompt_list: list[Prompt], source: str,
                       until_accepted: int | None) -> None:
    """Register, write (judging each sample as it finishes), Self-Lengthen's iterations. What was
    written and judged is in the session's tally."""
    settings = session.settings
    size = settings.build.shard_size
    register_prompts(session, prompt_list, source)
    if settings.instructions.enabled:
        prompt_list = prompt_list + await expand_instructions(session, prompt_list, source)
    items = longest_first(prompt_list, settings.build.samples_per_prompt, settings.agentwrite.default_words)
    writers = settings.writers.enabled
    panel = judge_panel(session, prompt_list,
                        None if until_accepted else settings.build.samples_per_prompt * len(writers))
    try:
        if until_accepted:  # one writer: load_build_inputs refused more
            reporter().start(until_accepted, session.engine)
            await write_until_accepted(session, panel, writers[0], prompt_list, until_accepted)
        else:
            reporter().start(len(items) * len(writers), session.engine)
            await gather_all(write_shard(session, panel, writer, items[i:i + size])
                             for writer in writers for i in range(0, len(items), size))
        if "self_lengthen" in writers:
            await self_lengthen_iterations(session, panel, items)
        if panel.enabled:
            await judge_remaining(panel)
    finally:
        reporter().stop()
    session.tally.judgment_ids = panel.judgment_ids


async def self_lengthen_iterations(session: BuildSession, panel: JudgePanel, items: list[tuple[Prompt, int]]) -> None:
    """Self-Lengthen's macro iterations after the first: retrain both roles on what the last one
    kept, write again with them, until [self_lengthen] iterations or an iteration keeps nothing."""
    data = self_lengthen_data(session, 1)
    for iteration in range(2, session.settings.self_lengthen.iterations + 1):
        if not data["rows"]:
            reporter().note(f"self-lengthen: iteration {iteration - 1} kept no samples; nothing to retrain on")
            return
        adapters = retrain_roles(session, iteration - 1)
        await lengthen_iteration(session, panel, items, adapters, iteration)
        data = self_lengthen_data(session, iteration)


def corpus_stages(session: BuildSession) -> None:
    """Once over everything the session wrote or merged: filter, fit, select → GATEAU → export."""
    settings = session.settings
    with session.corpus_stage("score-and-select"):
        score_and_select(session)
    if settings.gateau.enabled:
        with session.corpus_stage("gateau-select"):
            gateau_stage(session)
    if settings.export.enabled:
        with session.corpus_stage("export"):
            export_stage(session)
