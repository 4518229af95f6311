"""The `build` flow: load → write → score → store → export."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from flows.stages import export_stage, gather_all, register_prompts, write_shard, write_until_accepted
from longform.build_inputs import load_build_inputs
from longform.progress import reporter
from longform.session import build_session


@flow(name="build")
async def build(config: str, prompts: str | None = None, limit: int | None = None,
                db: str | None = None, until_accepted: int | None = None) -> dict:
    settings, prompts_path, prompt_list = load_build_inputs(Path(config), prompts=prompts, db=db, limit=limit)
    items = [(p, i) for p in prompt_list for i in range(settings.build.samples_per_prompt)]
    size = settings.build.shard_size

    async with build_session(settings, prompts_path=prompts_path, prefect_flow_run_id=flow_run.id) as session:
        register_prompts(session, prompt_list, str(prompts_path))
        try:
            if until_accepted:
                reporter().start(until_accepted, session.engine)
                await write_until_accepted(session, settings.writers.enabled[0], prompt_list, until_accepted)
            else:
                reporter().start(len(items) * len(settings.writers.enabled), session.engine)
                await gather_all(write_shard(session, writer, items[i:i + size])
                                 for writer in settings.writers.enabled
                                 for i in range(0, len(items), size))
        finally:
            reporter().stop()
        if settings.export.enabled:
            export_stage(session)
        return session.summary()
