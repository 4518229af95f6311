"""The `build` flow: load → write (each sample judged as it finishes) → for Self-Lengthen, retrain its
roles and write again, per macro iteration → filter, fit, select → export (flows/pipeline.py). With
shards, flows/shards.py."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from flows.pipeline import corpus_stages, write_stages
from flows.shards import build_sharded
from longform.build.inputs import load_build_inputs
from longform.build.session import build_session


@flow(name="build")
async def build(config: str, prompts: str | None = None, limit: int | None = None,
                db: str | None = None, until_accepted: int | None = None) -> dict:
    # Validated again here, not only by the CLI: a deployment's runs reach the flow without it.
    settings, prompts_path, prompt_list = load_build_inputs(Path(config), prompts=prompts, db=db, limit=limit,
                                                            until_accepted=until_accepted)
    if settings.build.shards > 1:  # a deployment of `build` honours [build] shards too
        return await build_sharded(config=config, shards=settings.build.shards, prompts=prompts, limit=limit, db=db)
    async with build_session(settings, prompts_path=prompts_path, prefect_flow_run_id=flow_run.id) as session:
        await write_stages(session, prompt_list, str(prompts_path), until_accepted)
        corpus_stages(session)
        return session.summary()
