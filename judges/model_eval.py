"""`longform eval`: several models answer the same prompts; each answer is scored for length (and,
on request, quality), each model summarised, and every two models compared prompt by prompt.

A model is evaluated where it lives:
- **transformers** (`--model`): a local directory such as a `longform train` output, an HF id in the
  local cache, or `embedded` (the embedded model's own weights, unquantised). Answers are generated
  in batches (hf_model.generate_batch), in this process.
- **an endpoint** (`--endpoint`): any OpenAI-compatible server, the way a trained model is served by
  vLLM on a GPU box, or `embedded` (the llama.cpp server). Requests go through the engine, so they
  are cached, concurrent and routed like a build's.

Every answer is stored as it arrives under a key naming what produced it (model, prompt, seed, token
cap, sampling), so an interrupted evaluation resumes where it stopped and a second evaluation of the
same model on the same prompts generates nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from judges import length_eval
from judges.material import Candidate
from judges.rubric import RubricJudge
from longform.config import EndpointConfig, Settings
from longform.engine import ChatRequest, RequestFailed
from longform.models.endpoints import open_pool
from longform.errors import LongformError
from longform.clock import now, timed_id
from longform.ids import content_hash
from longform.lengths import LengthSpec
from longform.prompts import Prompt
from longform.build.session import new_engine
from longform.store import Store

Note = Callable[[str], None]


@dataclass(frozen=True)
class Contestant:
    """One model of an evaluation: its label in the report, what the user gave, and how it is run."""
    label: str
    source: str
    backend: str                               # transformers | endpoint
    endpoint: EndpointConfig | None = None
    identity: str = ""                         # what its answers depend on (weights digest, served model)
    train_id: str | None = None


@dataclass(frozen=True)
class Sampling:
    seed: int = 0
    temperature: float = 0.7
    top_p: float = 0.95
    tokens_per_word: float = 1.5
    max_new_tokens: int | None = None          # a cap on every answer (smoke runs)
    batch_size: int = 8

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class EvalResult:
    eval_id: str
    contestants: list[Contestant]
    answers: dict[str, list[dict]]             # label → rows, in prompt order
    summaries: dict[str, dict]
    pairs: list[dict] = field(default_factory=list)
    generated: int = 0
    reused: int = 0


def new_eval_id() -> str:
    return timed_id("e")


def local_contestant(model: str, store: Store) -> Contestant:
    """A model run in transformers, identified by a digest of its weight files."""
    from longform.models.hf_model import resolve

    path = resolve(model)
    train_id = store.train_id_for(Path(path).resolve()) if Path(path).exists() else None
    label = "embedded" if model == "embedded" else Path(model).name if Path(model).exists() else model
    return Contestant(label, model, "transformers", identity=_weights_digest(path), train_id=train_id)


def endpoint_contestant(spec: str) -> Contestant:
    """`embedded` (the llama.cpp server), `URL`, or `MODEL@URL` (a served model other than the only one)."""
    if spec == "embedded":
        return Contestant("embedded-server", spec, "endpoint", EndpointConfig(kind="embedded"))
    model, _, url = spec.rpartition("@") if "@" in spec else (None, "", spec)
    if not url.startswith(("http://", "https://")):
        raise LongformError(f"--endpoint {spec!r}: expected `embedded`, URL or MODEL@URL (http://host:port/v1)")
    cfg = EndpointConfig(kind="openai", base_url=url, model=model or None)
    return Contestant(model or url, spec, "endpoint", cfg)


def _weights_digest(path: str) -> str:
    root = Path(path)
    if not root.is_dir():
        return f"hf:{path}"   # an id in the HF cache: its name is what identifies it there
    digest = hashlib.sha256()
    files = sorted(p for p in root.iterdir() if p.suffix in (".safetensors", ".bin", ".json") and p.is_file()
                   and not p.name.startswith("trainer_state"))
    if not any(p.suffix in (".safetensors", ".bin") for p in files):
        raise LongformError(f"{path}: not a model directory (no .safetensors or .bin weights)")
    for p in files:
        digest.update(p.name.encode() + b"\0")
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:24]


def check_labels(contestants: list[Contestant]) -> None:
    seen: set[str] = set()
    for c in contestants:
        if c.label in seen:
            raise LongformError(f"model {c.label!r} is given twice; each model of an evaluation needs its own name")
        seen.add(c.label)


def answer_key(identity: str, prompt: Prompt, cap: int, sampling: Sampling, backend: str) -> str:
    material = [backend, identity, prompt.instruction, cap, sampling.seed, sampling.temperature, sampling.top_p,
                sampling.batch_size if backend == "transformers" else None]
    return "a-" + content_hash(material, 24)


def evaluate(store: Store, contestants: list[Contestant], prompts: list[tuple[Prompt, LengthSpec]], *,
             prompts_path: str, sampling: Sampling, settings: Settings, quality: bool = False,
             eval_id: str | None = None, note: Note = lambda _: None) -> EvalResult:
    """Answer, score, summarise, compare and store; `note` hears about progress."""
    check_labels(contestants)
    eval_id = eval_id or new_eval_id()
    result = EvalResult(eval_id, [], {}, {})
    for contestant in contestants:
        if contestant.backend == "transformers":
            rows, contestant = _local_answers(store, contestant, prompts, sampling, eval_id, result, note)
        else:
            rows, contestant = asyncio.run(_endpoint_answers(store, contestant, prompts, sampling, settings,
                                                             eval_id, result, note))
        result.contestants.append(contestant)
        result.answers[contestant.label] = rows
    if quality:
        asyncio.run(_judge_quality(store, result, settings, eval_id, note))
    for contestant in result.contestants:
        result.summaries[contestant.label] = length_eval.summarize(result.answers[contestant.label])
    for a, b in itertools.combinations(result.contestants, 2):
        for metric in length_eval.PAIRED_METRICS:
            pair = length_eval.paired(result.answers[b.label], result.answers[a.label], metric)
            if pair["n"]:
                result.pairs.append({"eval_id": eval_id, "model_a": b.label, "model_b": a.label, **pair})
    for contestant in result.contestants:
        store.put_eval({"eval_id": eval_id, "model": contestant.label, "source": contestant.source,
                        "backend": contestant.backend, "train_id": contestant.train_id, "prompts_path": prompts_path,
                        "settings": {**sampling.as_dict(), "quality": quality, "identity": contestant.identity},
                        "summary": result.summaries[contestant.label]},
                       [p for p in result.pairs if contestant.label in (p["model_a"], p["model_b"])])
    return result


def _planned(contestant: Contestant, prompts, sampling: Sampling) -> list[tuple[Prompt, LengthSpec, int, str]]:
    out = []
    for prompt, spec in prompts:
        cap = length_eval.budget(spec, sampling.tokens_per_word, sampling.max_new_tokens)
        out.append((prompt, spec, cap, answer_key(contestant.identity, prompt, cap, sampling, contestant.backend)))
    return out


def _row(eval_id: str, contestant: Contestant, prompt: Prompt, spec: LengthSpec, cap: int, key: str, text: str,
         tokens: int, finish: str | None, error: str | None = None) -> dict:
    return {"eval_id": eval_id, "model": contestant.label, "prompt_id": prompt.prompt_id,
            "instruction": prompt.instruction, "answer_key": key, "text": text, "tokens_out": tokens,
            "max_tokens": cap, "error": error, "train_id": contestant.train_id, "created_at": now(),
            **length_eval.score_answer(spec, text, finish)}


def _reuse(store: Store, planned, eval_id: str, contestant: Contestant, result: EvalResult) -> dict[str, dict]:
    """Answers already stored under the same keys, copied into this evaluation."""
    found = store.eval_answers_by_key([key for *_, key in planned])
    rows = {}
    for prompt, spec, cap, key in planned:
        if key in found:
            old = found[key]
            row = _row(eval_id, contestant, prompt, spec, cap, key, old["text"], old["tokens_out"],
                       old["finish_reason"])
            row.update(quality=old.get("quality"), judge_model=old.get("judge_model"))
            store.add("eval_answers", row)
            rows[prompt.prompt_id] = row
            result.reused += 1
    return rows


def _local_answers(store, contestant, prompts, sampling, eval_id, result, note) -> tuple[list[dict], Contestant]:
    from longform.models import hf_model

    planned = _planned(contestant, prompts, sampling)
    rows = _reuse(store, planned, eval_id, contestant, result)
    todo = sorted((p for p in planned if p[0].prompt_id not in rows), key=lambda p: p[2])
    if todo:
        note(f"{contestant.label}: generating {len(todo)} answers in transformers"
             f" ({len(rows)} from earlier evaluations)")
        lm, tokenizer = hf_model.load_causal_lm(contestant.source)
        # Rows of similar token caps share a batch, so a batch stops soon after its longest row.
        for start in range(0, len(todo), sampling.batch_size):
            batch = todo[start:start + sampling.batch_size]
            started = time.monotonic()
            answers = hf_model.generate_batch(lm, tokenizer, [p.instruction for p, *_ in batch],
                                              max_new_tokens=[cap for _, _, cap, _ in batch], seed=sampling.seed,
                                              temperature=sampling.temperature, top_p=sampling.top_p)
            for (prompt, spec, cap, key), (text, tokens, finish) in zip(batch, answers):
                row = _row(eval_id, contestant, prompt, spec, cap, key, text, tokens, finish)
                store.add("eval_answers", row)
                rows[prompt.prompt_id] = row
                result.generated += 1
            store.flush()
            note(f"{contestant.label}: {len(rows)}/{len(planned)} answered"
                 f" ({sum(t for _, t, _ in answers):,} tokens in {time.monotonic() - started:.0f} s)")
        del lm
    return [rows[p.prompt_id] for p, *_ in planned], contestant


async def _endpoint_answers(store, contestant, prompts, sampling, settings, eval_id, result,
                            note) -> tuple[list[dict], Contestant]:
    with open_pool([contestant.endpoint]) as endpoints:
        engine = new_engine(settings, endpoints, store, eval_id)
        try:
            await engine.check()
            # The served model's name is what its answers depend on (the request cache keys on it too).
            contestant = Contestant(contestant.label, contestant.source, contestant.backend, contestant.endpoint,
                                    identity=f"{engine.model}", train_id=contestant.train_id)
            planned = _planned(contestant, prompts, sampling)
            rows = _reuse(store, planned, eval_id, contestant, result)
            todo = [p for p in planned if p[0].prompt_id not in rows]
            if todo:
                note(f"{contestant.label}: asking {len(todo)} answers of {engine.model} at"
                     f" {contestant.endpoint.base_url or 'the embedded server'}")

            async def one(prompt: Prompt, spec: LengthSpec, cap: int, key: str) -> None:
                request = ChatRequest(stage="eval", messages=[{"role": "user", "content": prompt.instruction}],
                                      max_tokens=cap, temperature=sampling.temperature, top_p=sampling.top_p,
                                      seed=sampling.seed, template="eval", sample_id=key, prompt_id=prompt.prompt_id)
                try:
                    answer = await engine.complete(request)
                    row = _row(eval_id, contestant, prompt, spec, cap, key, answer.text.strip(), answer.tokens_out,
                               answer.finish_reason)
                except RequestFailed as e:
                    row = _row(eval_id, contestant, prompt, spec, cap, key, "", 0, "error", error=str(e)[:500])
                store.add("eval_answers", row)
                rows[prompt.prompt_id] = row
                result.generated += 1

            await asyncio.gather(*(one(*p) for p in todo))
            store.flush()
        finally:
            await engine.close()
    return [rows[p.prompt_id] for p, *_ in planned], contestant


async def _judge_quality(store: Store, result: EvalResult, settings: Settings, eval_id: str, note: Note) -> None:
    """S_q for every answer that has none: LongBench-Write's six dimensions from the rubric judge,
    on the judges' endpoints (or the build's), its requests cached like a build's."""
    todo = [row for rows in result.answers.values() for row in rows if row.get("quality") is None and not row["error"]]
    if not todo:
        return
    pool = settings.judges.endpoints or settings.writer_endpoints
    note(f"judging {len(todo)} answers for S_q")
    with open_pool(pool) as endpoints:
        engine = new_engine(settings, endpoints, store, eval_id)
        try:
            await engine.check()
            judge = RubricJudge(engine, settings.judges, pool[0].context_window)

            async def one(row: dict) -> None:
                verdict = await judge.judge(Candidate(row["answer_key"], row["prompt_id"], row["instruction"],
                                                      row["text"], row["tokens_out"]), eval_id)
                row["quality"] = verdict.get("expected_quality") or verdict.get("quality")
                row["judge_model"] = engine.model

            await asyncio.gather(*(one(row) for row in todo))
        finally:
            await engine.close()
    store.set_eval_quality(eval_id, [(r["model"], r["prompt_id"], r["quality"], r["judge_model"]) for r in todo])
