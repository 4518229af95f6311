"""The build's stages as Prefect tasks.

A task is a shard of prompts or a corpus-wide stage, never a single request (Prefect costs
milliseconds per task run). Inside a shard every sample runs its own chain (plan, sections, length
score, store) and nothing waits for the rest of the shard.
"""

from __future__ import annotations

import asyncio

from prefect import task
from prefect.cache_policies import NONE

from judges.filters import SELF_LENGTHEN_FILTERS
from judges.material import Candidate
from judges.panel import JudgePanel
from judges.ruler import meta_length_token
from judges.scoring import score_run
from longform.build.admission import accepted, candidate_order, run_until_accepted
from longform.dataset.export import export_run, export_target, write_parquet
from longform.build.reporting import reporter
from longform.prompts import Prompt
from longform.build.session import BuildSession
from longform.models.training import Adapter, train_adapter
from writers import writer_for
from writers.self_instruct import SelfInstruct
from writers.self_lengthen import ROLES, WRITER as SELF_LENGTHEN, iteration_folder, training_rows


@task(name="register-prompts", cache_policy=NONE)
def register_prompts(session: BuildSession, prompts: list[Prompt], source: str) -> None:
    session.register_prompts(prompts, source)


def judge_panel(session: BuildSession, prompts: list[Prompt], candidates_per_prompt: int | None) -> JudgePanel:
    """The build's judges. With a known number of candidates per prompt, a prompt's pairs are
    judged as soon as its last candidate is written."""
    judges = session.judge_engine
    panel = JudgePanel(judges, session.settings.judges, context_window=judges.endpoint.context_window,
                       run_id=session.run_id, record=lambda row: session.store.add("judgments", row))
    if candidates_per_prompt:
        for p in prompts:
            panel.expect(p.prompt_id, candidates_per_prompt)
    return panel


@task(name="expand-instructions", cache_policy=NONE)
async def expand_instructions(session: BuildSession, seeds: list[Prompt], source: str) -> list[Prompt]:
    """New instructions from the seeds, registered as prompts; every candidate is stored."""
    expander = SelfInstruct(session.engine, session.settings.instructions, seed=session.settings.build.seed)
    new, candidates = await expander.expand(seeds, session.store.instructions(), session.run_id)
    session.store.add_many("instruction_candidates", candidates)
    session.register_prompts(new, f"self_instruct from {source}")
    reporter().note(f"self-instruct: kept {len(new)} of {len(candidates)} candidate instructions")
    return new


@task(name="write-shard", cache_policy=NONE)
async def write_shard(session: BuildSession, panel: JudgePanel, writer_name: str,
                      items: list[tuple[Prompt, int]]) -> None:
    await _write_all(session, panel, _writer(session, writer_name), items)


def _writer(session: BuildSession, name: str, engine=None, **options):
    """The named writer on the build's engine (or `engine`), Self-Lengthen's rounds gated by its filters."""
    return writer_for(name, engine or session.engine, session.settings, checks=SELF_LENGTHEN_FILTERS, **options)


@task(name="write-until-accepted", cache_policy=NONE)
async def write_until_accepted(session: BuildSession, panel: JudgePanel, writer_name: str, prompts: list[Prompt],
                               target: int) -> None:
    """Candidates in a fixed order (every prompt's sample 0, then every prompt's sample 1, …),
    within the candidate budget, until `target` samples pass the selection policy."""
    writer = _writer(session, writer_name)
    candidates = candidate_order(prompts, target, session.settings.build.candidate_budget)
    already = session.store.existing_sample_ids([writer.sample_id(p, k) for p, k in candidates])

    async def one(candidate: tuple[Prompt, int]) -> bool:
        return await write_one(session, panel, writer, *candidate, already)

    accepted, started = await run_until_accepted(candidates, one, target=target,
                                                 max_active=session.settings.active_samples)
    session.tally.accepted = accepted
    session.tally.candidates = started


async def _write_all(session: BuildSession, panel: JudgePanel, writer, items: list[tuple[Prompt, int]]) -> None:
    already = session.store.existing_sample_ids([writer.sample_id(p, i) for p, i in items])

    async def one(prompt: Prompt, sample_index: int) -> None:
        async with session.active_samples:
            await write_one(session, panel, writer, prompt, sample_index, already)

    await gather_all(one(p, i) for p, i in items)


async def write_one(session: BuildSession, panel: JudgePanel, writer, prompt: Prompt, sample_index: int,
                    already: set[str]) -> bool:
    """Write, score, store and judge one sample; whether it passes the length floor."""
    result = await writer.write(prompt, sample_index)
    measured = session.record(result, new=result.sample_id not in already, model=writer.model)
    candidate = None
    if measured is not None:
        candidate = Candidate(result.sample_id, prompt.prompt_id, prompt.instruction, result.text, result.tokens_out)
    await panel.sample_done(prompt.prompt_id, (sample_index, writer.name), candidate)
    reporter().sample_done(measured is not None)
    return measured is not None and accepted(measured, session.settings.selection.min_length_score)


async def gather_all(coroutines) -> None:
    """Run all to the end, then raise the first error: a stopping build must not close the store
    under samples that are still recording their last answer."""
    results = await asyncio.gather(*coroutines, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


@task(name="judge-remaining", cache_policy=NONE)
async def judge_remaining(panel: JudgePanel) -> None:
    await panel.judge_remaining()


@task(name="score-and-select", cache_policy=NONE)
def score_and_select(session: BuildSession) -> dict:
    summary = score_run(session.store, session.settings, run_id=session.run_id,
                        sample_ids=session.tally.sample_ids, judgment_ids=session.tally.judgment_ids,
                        judge_model=session.judge_model or "").as_dict()
    session.tally.scoring = summary
    return summary


@task(name="self-lengthen-data", cache_policy=NONE)
def self_lengthen_data(session: BuildSession, iteration: int) -> dict:
    """Both roles' training rows from the iteration's kept Self-Lengthen samples, as TRL `messages`
    Parquet: what retrains them for the next iteration."""
    cfg = session.settings
    chains = session.store.lengthen_pairs(session.tally.sample_ids, iteration, SELF_LENGTHEN)
    data = training_rows(chains, keep=cfg.self_lengthen.noise_keep, seed=cfg.build.seed)
    folder = iteration_folder(cfg.build.out_dir / cfg.build.name, iteration)
    write_parquet(folder / "generator" / "sft" / "train.parquet", data.generator)
    write_parquet(folder / "extender" / "sft" / "train.parquet", data.extender)
    return {"folder": str(folder), "rows": len(data.generator)}


@task(name="self-lengthen-retrain", cache_policy=NONE)
def retrain_roles(session: BuildSession, iteration: int) -> dict[str, Adapter]:
    """A LoRA adapter per role, trained on iteration `iteration`'s data (training.train_adapter)."""
    cfg = session.settings
    folder = iteration_folder(cfg.build.out_dir / cfg.build.name, iteration)
    return {role: train_adapter(folder / role, name=f"{role}-iter{iteration}", base=cfg.lengthen_base, cfg=cfg.train,
                                max_steps=cfg.self_lengthen.train_max_steps, record=session.store.put_train_run)
            for role in ROLES}


@task(name="self-lengthen-iteration", cache_policy=NONE)
async def lengthen_iteration(session: BuildSession, panel: JudgePanel, items: list[tuple[Prompt, int]],
                             adapters: dict[str, Adapter], iteration: int) -> None:
    """Self-Lengthen again on the same prompts, each role written by its retrained adapter."""
    async with session.adapter_engine(list(adapters.values())) as engine:
        writer = _writer(session, "self_lengthen", engine, roles={role: a.name for role, a in adapters.items()},
                         iteration=iteration)
        await _write_all(session, panel, writer, items)


@task(name="gateau-select", cache_policy=NONE)
def gateau_stage(session: BuildSession) -> dict:
    # Imported here: torch and transformers (the `train` extra) are only needed when GATEAU is on.
    from judges.gateau_selection import select_gateau

    result = select_gateau(session.store, session.settings.gateau, run_id=session.run_id)
    if session.tally.scoring is not None:
        session.tally.scoring["gateau"] = result
    return result


@task(name="export", cache_policy=NONE)
def export_stage(session: BuildSession) -> str:
    """The build owns `<out_dir>/<build name>`: each run replaces its previous export there."""
    cfg = session.settings
    target = export_target(cfg.build.out_dir, cfg.build.name, force=True)
    export_run(session.store, run_id=session.run_id, target=target, config=cfg.snapshot(),
               test_ratio=cfg.export.test_ratio,
               assistant_prefix=meta_length_token if cfg.export.meta_length_tokens else None,
               relabel_length=cfg.export.relabel_length, decontaminate=cfg.export.decontaminate,
               include_plan=cfg.export.include_plan)
    session.tally.export_dir = str(target)
    return str(target)
