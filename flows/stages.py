"""The build's stages as Prefect tasks.

A task is a shard of prompts or a corpus-wide stage, never a single request (Prefect costs
milliseconds per task run). Inside a shard every sample runs its own chain (plan, sections, length
score, store) and nothing waits for the rest of the shard.
"""

from __future__ import annotations

import asyncio
import hashlib
from itertools import count, islice

from prefect import task
from prefect.cache_policies import NONE

from judges import length
from longform.admission import run_until_accepted
from longform.export import export_sft
from longform.progress import reporter
from longform.prompts import Prompt
from longform.session import BuildSession
from longform.store import now
from writers.agentwrite import AgentWrite, Draft, WriteFailure

WRITERS = {"agentwrite": AgentWrite}


@task(name="register-prompts", cache_policy=NONE)
def register_prompts(session: BuildSession, prompts: list[Prompt], source: str) -> None:
    session.store.add_prompts(prompts, source)


@task(name="write-shard", cache_policy=NONE)
async def write_shard(session: BuildSession, writer_name: str, items: list[tuple[Prompt, int]]) -> None:
    writer = _writer(session, writer_name)
    already = session.store.existing_sample_ids([writer.sample_id(p, i) for p, i in items])

    async def one(prompt: Prompt, sample_index: int) -> None:
        async with session.active_samples:
            await write_one(session, writer, prompt, sample_index, already)

    await gather_all(one(p, i) for p, i in items)


@task(name="write-until-accepted", cache_policy=NONE)
async def write_until_accepted(session: BuildSession, writer_name: str, prompts: list[Prompt], target: int) -> None:
    """Candidates in a fixed order (every prompt's sample 0, then every prompt's sample 1, …),
    within the candidate budget, until `target` samples pass the selection policy."""
    writer = _writer(session, writer_name)
    budget = session.settings.build.candidate_budget or 4 * target
    candidates = list(islice(((p, k) for k in count() for p in prompts), budget))
    already = session.store.existing_sample_ids([writer.sample_id(p, k) for p, k in candidates])

    async def one(candidate: tuple[Prompt, int]) -> bool:
        return await write_one(session, writer, *candidate, already)

    accepted, started = await run_until_accepted(candidates, one, target=target,
                                                 max_active=session.settings.active_samples)
    session.tally.accepted = accepted
    session.tally.candidates = started


def _writer(session: BuildSession, writer_name: str):
    cfg = session.settings
    return WRITERS[writer_name](session.engine, cfg.agentwrite, cfg.generation, seed=cfg.build.seed)


async def write_one(session: BuildSession, writer, prompt: Prompt, sample_index: int, already: set[str]) -> bool:
    """Write, score and store one sample; whether it passes the selection policy."""
    result = await writer.write(prompt, sample_index)
    accepted = save(session, result, new=result.sample_id not in already)
    reporter().sample_done(isinstance(result, Draft))
    return accepted


async def gather_all(coroutines) -> None:
    """Run all to the end, then raise the first error: a stopping build must not close the store
    under samples that are still recording their last answer."""
    results = await asyncio.gather(*coroutines, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def save(session: BuildSession, result: Draft | WriteFailure, *, new: bool) -> bool:
    store, tally = session.store, session.tally
    if isinstance(result, WriteFailure):
        failure_id = hashlib.sha256(f"{session.run_id}|{result.stage}|{result.sample_id}".encode()).hexdigest()[:24]
        store.add("failures", {
            "failure_id": failure_id, "run_id": session.run_id, "stage": result.stage,
            "prompt_id": result.prompt.prompt_id, "sample_id": result.sample_id, "key": result.key,
            "reason": result.reason, "detail": result.detail, "created_at": now()})
        tally.failures[f"{result.stage}:{result.reason}"] += 1
        return False
    scored = length.measure(result.text, result.required_words)
    # Sections first: one flush commits both, but a reader of the batch sees parents after children.
    store.add_many("sections", result.section_rows())
    store.add("samples", {**result.sample_row(session.run_id, session.engine.model), **scored})
    tally.samples += 1
    tally.new_samples += int(new)
    tally.length_scores.append(scored["length_score"])
    tally.sample_ids.append(result.sample_id)
    # The selection policy, until judges and GATEAU add theirs: the export's length-score floor.
    return scored["length_score"] >= session.settings.export.min_length_score


@task(name="export-sft", cache_policy=NONE)
def export_stage(session: BuildSession) -> str:
    cfg = session.settings
    target = export_sft(session.store, session.tally.sample_ids, out_dir=cfg.build.out_dir,
                        name=cfg.build.name, min_length_score=cfg.export.min_length_score,
                        run_id=session.run_id, config=cfg.snapshot())
    session.tally.export_dir = str(target)
    return str(target)
