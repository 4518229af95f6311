"""The `build` flow: load → write (each sample judged as it finishes) → for Self-Lengthen, retrain its roles
and write again, per macro iteration → filter, fit, select → export. With shards, flows/shards.py."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from flows.stages import (expand_instructions, export_stage, gateau_stage, gather_all, judge_panel, judge_remaining,
                          lengthen_iteration, register_prompts, retrain_roles, score_and_select, self_lengthen_data,
                          write_shard, write_until_accepted)
from longform.build.admission import longest_first
from longform.build.inputs import load_build_inputs
from longform.errors import LongformError
from longform.build.reporting import reporter
from longform.prompts import Prompt
from longform.build.session import BuildSession, build_session


@flow(name="build")
async def build(config: str, prompts: str | None = None, limit: int | None = None,
                db: str | None = None, until_accepted: int | None = None) -> dict:
    settings, prompts_path, prompt_list = load_build_inputs(Path(config), prompts=prompts, db=db, limit=limit)
    if settings.build.shards > 1 and not until_accepted:
        from flows.shards import build_sharded  # a deployment of `build` honours [build] shards too

        return await build_sharded(config=config, shards=settings.build.shards, prompts=prompts, limit=limit, db=db)
    async with build_session(settings, prompts_path=prompts_path, prefect_flow_run_id=flow_run.id) as session:
        await write_stages(session, prompt_list, str(prompts_path), until_accepted)
        corpus_stages(session)
        return session.summary()


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
        if until_accepted:
            if len(writers) > 1:  # the CLI refuses this first; a deployment's parameters land here
                raise LongformError("--until-accepted runs one writer; [writers] enabled lists"
                                    f" {', '.join(writers)}")
            reporter().start(until_accepted, session.engine)
            await write_until_accepted(session, panel, writers[0], prompt_list, until_accepted)
        else:
            reporter().start(len(items) * len(writers), session.engine)
            await gather_all(write_shard(session, panel, writer, items[i:i + size])
                             for writer in writers for i in range(0, len(items), size))
        if "self_lengthen" in writers:
            data = self_lengthen_data(session, 1)
            for iteration in range(2, settings.self_lengthen.iterations + 1):
                if not data["rows"]:
                    reporter().note(f"self-lengthen: iteration {iteration - 1} kept no samples; nothing to retrain on")
                    break
                adapters = retrain_roles(session, iteration - 1)
                await lengthen_iteration(session, panel, items, adapters, iteration)
                data = self_lengthen_data(session, iteration)
        if panel.enabled:
            await judge_remaining(panel)
    finally:
        reporter().stop()
    session.tally.judgment_ids = panel.judgment_ids


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
