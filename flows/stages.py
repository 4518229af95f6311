"""The build's stages as Prefect tasks.

A task is a shard of prompts or a corpus-wide stage, never a single request (Prefect costs
milliseconds per task run). Inside a shard every sample runs its own chain (plan, sections, length
score, store) and nothing waits for the rest of the shard.
"""

from __future__ import annotations

import asyncio
import hashlib

from prefect import task
from prefect.cache_policies import NONE

from judges import length
from longform.errors import LongformError
from longform.export import export_sft
from longform.progress import reporter
from longform.prompts import Prompt
from longform.session import BuildSession
from longform.store import now
from writers.agentwrite import AgentWrite, Draft, WriteFailure

WRITERS = {"agentwrite": AgentWrite}


@task(name="register-prompts", cache_policy=NONE)
def register_prompts(session: BuildSession, prompts: list[Prompt], source: str) -> None:
    known = session.store.prompt_instructions([p.prompt_id for p in prompts])
    for p in prompts:
        if p.prompt_id in known and known[p.prompt_id] != p.instruction:
            # An id is an identity: reusing it for new text would pair old samples with it on export.
            raise LongformError(f"{source}: prompt id {p.prompt_id!r} is already in {session.store.path}"
                                " with a different instruction; give the changed prompt a new id")
    session.store.add_many("prompts", (
        {"prompt_id": p.prompt_id, "instruction": p.instruction, "target_words": p.target_words,
         "meta": p.meta or None, "source": source, "created_at": now()} for p in prompts))


@task(name="write-shard", cache_policy=NONE)
async def write_shard(session: BuildSession, writer_name: str, items: list[tuple[Prompt, int]]) -> None:
    cfg = session.settings
    writer = WRITERS[writer_name](session.engine, cfg.agentwrite, cfg.generation, seed=cfg.build.seed)
    already = session.store.existing_sample_ids([writer.sample_id(p, i) for p, i in items])

    async def one(prompt: Prompt, sample_index: int) -> None:
        async with session.active_samples:
            result = await writer.write(prompt, sample_index)
        save(session, result, new=result.sample_id not in already)
        reporter().sample_done(isinstance(result, Draft))

    await gather_all(one(p, i) for p, i in items)


async def gather_all(coroutines) -> None:
    """Run all to the end, then raise the first error: a stopping build must not close the store
    under samples that are still recording their last answer."""
    results = await asyncio.gather(*coroutines, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def save(session: BuildSession, result: Draft | WriteFailure, *, new: bool) -> None:
    store, tally = session.store, session.tally
    if isinstance(result, WriteFailure):
        failure_id = hashlib.sha256(f"{session.run_id}|{result.stage}|{result.sample_id}".encode()).hexdigest()[:24]
        store.add("failures", {
            "failure_id": failure_id, "run_id": session.run_id, "stage": result.stage,
            "prompt_id": result.prompt.prompt_id, "sample_id": result.sample_id, "key": result.key,
            "reason": result.reason, "detail": result.detail, "created_at": now()})
        tally.failures[f"{result.stage}:{result.reason}"] += 1
        return
    scored = length.measure(result.text, result.required_words)
    # Sections first: one flush commits both, but a reader of the batch sees parents after children.
    store.add_many("sections", result.section_rows())
    store.add("samples", {**result.sample_row(session.run_id, session.engine.model), **scored})
    tally.samples += 1
    tally.new_samples += int(new)
    tally.length_scores.append(scored["length_score"])
    tally.sample_ids.append(result.sample_id)


@task(name="export-sft", cache_policy=NONE)
def export_stage(session: BuildSession) -> str:
    cfg = session.settings
    target = export_sft(session.store, session.tally.sample_ids, out_dir=cfg.build.out_dir,
                        name=cfg.build.name, min_length_score=cfg.export.min_length_score,
                        run_id=session.run_id, config=cfg.snapshot())
    session.tally.export_dir = str(target)
    return str(target)
