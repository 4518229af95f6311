"""The build's stages as Prefect tasks.

A task is a shard of prompts or a corpus-wide stage, never a single request (Prefect costs
milliseconds per task run). Inside a shard every sample runs its own chain (plan, sections, length
score, store) and nothing waits for the rest of the shard.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from itertools import count, islice

from prefect import task
from prefect.cache_policies import NONE

from judges.filters import SELF_LENGTHEN_FILTERS
from judges.material import Candidate
from judges.panel import JudgePanel
from judges.ruler import meta_length_token
from judges.scoring import score_run
from longform.ids import row_id
from longform.admission import run_until_accepted
from longform.export import export_run, export_target
from longform.lengths import measure
from longform.progress import reporter
from longform.prompts import Prompt
from longform.session import BuildSession
from longform.store import now
from longform.schema import APPEND_TABLES
from writers.agentwrite import AgentWrite, Draft, WriteFailure
from writers.self_instruct import SelfInstruct
from writers.self_lengthen import Lengthened, SelfLengthen, write_iteration_data



@task(name="register-prompts", cache_policy=NONE)
def register_prompts(session: BuildSession, prompts: list[Prompt], source: str) -> None:
    session.store.add_prompts(prompts, source)


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
    _, known = session.store.query("SELECT instruction FROM prompts")
    expander = SelfInstruct(session.engine, session.settings.instructions, seed=session.settings.build.seed)
    new, candidates = await expander.expand(seeds, [r[0] for r in known], session.run_id)
    session.store.add_many("instruction_candidates", candidates)
    session.store.add_prompts(new, f"self_instruct from {source}")
    reporter().note(f"self-instruct: kept {len(new)} of {len(candidates)} candidate instructions")
    return new


@task(name="write-shard", cache_policy=NONE)
async def write_shard(session: BuildSession, panel: JudgePanel, writer_name: str,
                      items: list[tuple[Prompt, int]]) -> None:
    await _write_all(session, panel, _writer(session, writer_name), items)


@task(name="write-until-accepted", cache_policy=NONE)
async def write_until_accepted(session: BuildSession, panel: JudgePanel, writer_name: str, prompts: list[Prompt],
                               target: int) -> None:
    """Candidates in a fixed order (every prompt's sample 0, then every prompt's sample 1, …),
    within the candidate budget, until `target` samples pass the selection policy."""
    writer = _writer(session, writer_name)
    budget = session.settings.build.candidate_budget or 4 * target
    candidates = list(islice(((p, k) for k in count() for p in prompts), budget))
    already = session.store.existing_sample_ids([writer.sample_id(p, k) for p, k in candidates])

    async def one(candidate: tuple[Prompt, int]) -> bool:
        return await write_one(session, panel, writer, *candidate, already)

    accepted, started = await run_until_accepted(candidates, one, target=target,
                                                 max_active=session.settings.active_samples)
    session.tally.accepted = accepted
    session.tally.candidates = started


def _writer(session: BuildSession, writer_name: str):
    cfg = session.settings
    if writer_name == "self_lengthen":
        return SelfLengthen(session.engine, cfg.self_lengthen, cfg.generation, seed=cfg.build.seed,
                            checks=SELF_LENGTHEN_FILTERS,
                            default_words=cfg.agentwrite.default_words)
    return AgentWrite(session.engine, cfg.agentwrite, cfg.generation, seed=cfg.build.seed)


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
    accepted = save(session, result, new=result.sample_id not in already, model=writer.model)
    candidate = None
    if not isinstance(result, WriteFailure):
        candidate = Candidate(result.sample_id, prompt.prompt_id, prompt.instruction, result.text, result.tokens_out)
    await panel.sample_done(prompt.prompt_id, (sample_index, writer.name), candidate)
    reporter().sample_done(not isinstance(result, WriteFailure))
    return accepted


async def gather_all(coroutines) -> None:
    """Run all to the end, then raise the first error: a stopping build must not close the store
    under samples that are still recording their last answer."""
    results = await asyncio.gather(*coroutines, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def save(session: BuildSession, result: Draft | Lengthened | WriteFailure, *, new: bool, model: str) -> bool:
    store, tally = session.store, session.tally
    for table, rows in result.extra_rows().items():
        # Before the sample row: one flush commits both, but a reader of the batch sees parents after children.
        store.add_many(table, ({"run_id": session.run_id, **row} if "run_id" in APPEND_TABLES[table] else row
                               for row in rows))
    if isinstance(result, WriteFailure):
        store.add("failures", {
            "failure_id": row_id(session.run_id, result.stage, result.sample_id), "run_id": session.run_id, "stage": result.stage,
            "prompt_id": result.prompt.prompt_id, "sample_id": result.sample_id, "key": result.key,
            "reason": result.reason, "detail": result.detail, "created_at": now()})
        tally.failures[f"{result.stage}:{result.reason}"] += 1
        return False
    scored = measure(result.text, result.spec)
    store.add("samples", {**result.sample_row(session.run_id, model), **scored})
    tally.samples += 1
    tally.new_samples += int(new)
    tally.length_scores.append(scored["length_score"])
    tally.sample_ids.append(result.sample_id)
    # `--until-accepted` counts samples over the length floor that obey their bound; judges and
    # filters come after.
    return scored["length_score"] >= session.settings.selection.min_length_score and scored["bound_ok"] is not False


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
    cfg = session.settings
    return write_iteration_data(session.store, sample_ids=session.tally.sample_ids,
                                out_dir=cfg.build.out_dir / cfg.build.name,
                                iteration=iteration, keep=cfg.self_lengthen.noise_keep, seed=cfg.build.seed)


@task(name="self-lengthen-retrain", cache_policy=NONE)
def retrain_roles(session: BuildSession, iteration: int) -> dict[str, tuple[str, str]]:
    """A LoRA adapter per role from iteration `iteration`'s data: role → (served name, adapter dir).

    An adapter is named by a hash of what it was trained from (data, base, [train] settings), so a
    rerun reuses it and the request cache stays correct: new data means a new name.
    """
    from longform.training import train

    cfg = session.settings
    folder = cfg.build.out_dir / cfg.build.name / "self_lengthen" / f"iter_{iteration}"
    train_cfg = cfg.train.model_copy(update={"lora": True})
    adapters = {}
    for role in ("generator", "extender"):
        dataset = folder / role
        material = [hashlib.sha256((dataset / "sft" / "train.parquet").read_bytes()).hexdigest(), cfg.self_lengthen.train_model,
                    cfg.self_lengthen.train_max_steps, train_cfg.model_dump(mode="json")]
        digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:12]
        out = folder / f"{role}-lora-{digest}"
        if not (out / "adapter_config.json").exists():
            train("sft", dataset_dir=dataset, model=cfg.self_lengthen.train_model, cfg=train_cfg, output_dir=out,
                  max_steps=cfg.self_lengthen.train_max_steps, record=session.store.put_train_run)
        adapters[role] = (f"{role}-iter{iteration}-{digest}", str(out))
    return adapters


@task(name="self-lengthen-iteration", cache_policy=NONE)
async def lengthen_iteration(session: BuildSession, panel: JudgePanel, items: list[tuple[Prompt, int]],
                             adapters: dict[str, tuple[str, str]], iteration: int) -> None:
    """Self-Lengthen again on the same prompts, each role served from its retrained adapter."""
    from longform.hf_server import HFServer

    cfg = session.settings
    roles = {role: name for role, (name, _) in adapters.items()}
    with HFServer({name: path for name, path in adapters.values()}, context_window=cfg.primary.context_window) as server:
        async with session.engine_for(server.endpoint(roles["generator"])) as engine:
            writer = SelfLengthen(engine, cfg.self_lengthen, cfg.generation, seed=cfg.build.seed,
                                  checks=SELF_LENGTHEN_FILTERS,
                                  default_words=cfg.agentwrite.default_words, roles=roles, iteration=iteration)
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
               assistant_prefix=meta_length_token if cfg.export.meta_length_tokens else None)
    session.tally.export_dir = str(target)
    return str(target)
