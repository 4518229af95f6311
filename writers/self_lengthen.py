"""Self-Lengthen (Quan et al., 2024, QwenLM/Self-Lengthen): a Generator writes a first answer; an
Extender repeatedly makes it longer.

One micro-round of the Extender:
1. split the current answer at paragraph boundaries and take the first half;
2. ask the Extender to *enrich* that half (more detail, no continuation, no repetition);
3. keep the first two thirds of the enriched paragraphs;
4. have the Extender continue from that kept text as the start of its own answer (an assistant
   prefix), with the whole current answer as the reference outline, so the result covers the rest.
A round is accepted only if its result passes the paper's filters and is longer than what it
extends. The chain's final answer is kept as a sample only if it grew by `min_growth`.

An answer the Generator left unfinished (`finish_reason = "length"`) is not thrown away: its first
step is a plain continuation from where it stopped.

Every step — generator output, continuation, each round's candidate, accepted or rejected — is a
`lengthen_steps` row with its parent, round, role, lengths before and after and filter verdicts.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Sequence

from longform import templates
from longform.checks import Check
from longform.config import GenerationConfig, SelfLengthenConfig
from longform.engine import ChatRequest, Completion, Engine, RequestFailed
from longform.ids import SampleIds, row_id
from longform.length_reader import spec_for
from longform.lengths import WORDS, LengthSpec
from longform.prompts import Prompt
from longform.reasons import FailureReason
from longform.clock import now
from longform.text import paragraphs, quote
from writers.outcomes import WriteFailure

WRITER = "self_lengthen"
# The two roles, each retrained from its own data after every macro iteration.
ROLES = ("generator", "extender")
_TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Step:
    step_id: str
    parent_step_id: str | None
    round: int
    role: str                 # generator | continuation | extender
    text: str
    words_before: int
    verdicts: tuple[Check, ...]
    accepted: bool
    reason: str
    finish_reason: str | None

    def row(self, prompt_id: str, sample_id: str, iteration: int) -> dict:
        return {"step_id": self.step_id, "prompt_id": prompt_id, "sample_id": sample_id,
                "parent_step_id": self.parent_step_id, "iteration": iteration, "round": self.round,
                "role": self.role, "words_before": self.words_before, "words_after": WORDS(self.text),
                "length_counter": WORDS.name, "verdicts": {c.filter: c.reason or "pass" for c in self.verdicts},
                "accepted": self.accepted, "reason": self.reason, "finish_reason": self.finish_reason,
                "text": self.text, "created_at": now()}


@dataclass(frozen=True)
class Lengthened:
    failed: ClassVar[bool] = False
    sample_id: str
    prompt: Prompt
    sample_index: int
    spec: LengthSpec
    steps: tuple[Step, ...]
    tokens_out: int
    iteration: int = 1

    @property
    def original(self) -> Step:
        return self.steps[0]

    @property
    def final(self) -> Step:
        return [s for s in self.steps if s.accepted][-1]

    @property
    def text(self) -> str:
        return self.final.text

    def sample_row(self, run_id: str, model: str) -> dict:
        return {"sample_id": self.sample_id, "prompt_id": self.prompt.prompt_id, "run_id": run_id,
                "writer": WRITER, "model": model, "sample_index": self.sample_index, "text": self.text,
                **self.spec.columns(), "n_sections": len(paragraphs(self.text)), "plan_source": None,
                "tokens_out": self.tokens_out, "created_at": now()}

    def extra_rows(self) -> dict[str, list[dict]]:
        return {"lengthen_steps": _step_rows(self.steps, self.prompt.prompt_id, self.sample_id, self.iteration)}


def _step_rows(steps, prompt_id: str, sample_id: str, iteration: int) -> list[dict]:
    return [s.row(prompt_id, sample_id, iteration) for s in steps]


def split_first_half(text: str) -> str:
    paras = paragraphs(text)
    return "\n\n".join(paras[:max(1, math.ceil(len(paras) / 2))])


def keep_two_thirds(text: str) -> str:
    paras = paragraphs(text)
    return "\n\n".join(paras[:max(1, math.ceil(len(paras) * 2 / 3))])


def noised(text: str, keep: float, seed: int) -> str:
    """The extender's training input: each line of the first answer kept with probability `keep`."""
    rng = random.Random(seed)
    return "\n".join(line for line in text.splitlines() if rng.random() < keep)


class SelfLengthen:
    name = WRITER

    def __init__(self, engine: Engine, cfg: SelfLengthenConfig, generation: GenerationConfig, *, seed: int,
                 checks: Sequence[Callable[[str], Check]], default_words: int = 1000,
                 roles: dict[str, str] | None = None, iteration: int = 1):
        """`checks`: the filters each round is gated by (the paper's three: judges/filters.py,
        handed over by the flow, so the writer depends on the core only); `roles`: the served model
        of each role ("generator", "extender") when they are not the endpoint's own model, as after
        retraining; `iteration`: the macro iteration this writes."""
        self._engine = engine
        self._checks = tuple(checks)
        self._sample_ids = SampleIds(self.fingerprint)
        self._roles = roles or {}
        self.iteration = iteration
        self._cfg = cfg
        self._gen = generation
        self._seed = seed
        self._default_words = default_words
        self._t = {name: templates.load(_TEMPLATES, f"self_lengthen_{name}")
                   for name in ("generate", "enrich", "continue")}

    def fingerprint(self) -> dict:
        return {"writer": WRITER, "model": self.model, "iteration": self.iteration,
                "self_lengthen": self._cfg.model_dump(mode="json"),
                "generation": self._gen.model_dump(mode="json"), "seed": self._seed,
                "templates": [t.identity for t in self._t.values()]}

    @property
    def model(self) -> str:
        """What wrote the samples: the endpoint's model, or the generator and extender it served."""
        if not self._roles:
            return self._engine.model
        return f"generator={self._roles['generator']};extender={self._roles['extender']}"

    def sample_id(self, prompt: Prompt, sample_index: int) -> str:
        return self._sample_ids(prompt, sample_index)

    async def write(self, prompt: Prompt, sample_index: int) -> Lengthened | WriteFailure:
        sample_id = self.sample_id(prompt, sample_index)
        spec = spec_for(prompt, self._default_words)
        steps: list[Step] = []
        tokens_out = 0
        stage = "generate"
        try:
            first = await self._ask("sl_generate", prompt, sample_index, self._t["generate"].render(instruction=prompt.instruction),
                                    self._t["generate"], self._cfg.generator_max_tokens)
            tokens_out += first.tokens_out
            steps.append(self._step(sample_id, None, 0, "generator", first.text, 0, first.finish_reason, accept=True))
            if first.truncated:
                # Truncation is an opportunity: continue where the generator stopped.
                stage = "continuation"
                more = await self._ask("sl_continue", prompt, sample_index,
                                       self._t["generate"].render(instruction=prompt.instruction), self._t["generate"],
                                       self._cfg.round_max_tokens, prefix=first.text)
                tokens_out += more.tokens_out
                steps.append(self._candidate(sample_id, steps[-1], 0, "continuation", first.text + more.text,
                                             more.finish_reason))
            for round_ in range(1, self._cfg.rounds + 1):
                stage = f"round_{round_}"
                current = [s for s in steps if s.accepted][-1]
                step, used = await self._round(prompt, sample_index, sample_id, current, round_)
                tokens_out += used
                steps.append(step)
        except RequestFailed as e:
            return WriteFailure(sample_id, prompt, stage, e.reason, e.detail, e.key,
                                extra={"lengthen_steps": _step_rows(steps, prompt.prompt_id, sample_id, self.iteration)})
        result = Lengthened(sample_id, prompt, sample_index, spec, tuple(steps), tokens_out, self.iteration)
        grown, original = WORDS(result.text), WORDS(result.original.text)
        if grown <= self._cfg.min_growth * original:
            return WriteFailure(sample_id, prompt, "self_lengthen", FailureReason.INSUFFICIENT_GROWTH,
                                f"{original} → {grown} words, needs > {self._cfg.min_growth:g}×", None,
                                extra=result.extra_rows())
        return result

    async def _round(self, prompt: Prompt, sample_index: int, sample_id: str, current: Step,
                     round_: int) -> tuple[Step, int]:
        half = split_first_half(current.text)
        enrich_budget = min(self._cfg.round_max_tokens, int(WORDS(half) * 2 * self._cfg.tokens_per_word) + 64)
        enriched = await self._ask(
            f"sl_enrich_{round_}", prompt, sample_index,
            self._t["enrich"].render(instruction=quote("INSTRUCTION", prompt.instruction), part=quote("PART", half)),
            self._t["enrich"], enrich_budget)
        kept = keep_two_thirds(enriched.text)
        body = self._t["continue"].render(instruction=prompt.instruction, reference=quote("PREVIOUS ANSWER", current.text))
        # Enough to cover the rest of the outline and then some: aim at 1.5× the current answer.
        rest_budget = int(max(WORDS(current.text) * 1.5 - WORDS(kept), 50) * self._cfg.tokens_per_word) + 64
        rest = await self._ask(f"sl_extend_{round_}", prompt, sample_index, body, self._t["continue"],
                               min(self._cfg.round_max_tokens, rest_budget), prefix=kept + "\n\n")
        text = kept + "\n\n" + rest.text.lstrip()
        return (self._candidate(sample_id, current, round_, "extender", text, rest.finish_reason),
                enriched.tokens_out + rest.tokens_out)

    def _candidate(self, sample_id: str, parent: Step, round_: int, role: str, text: str,
                   finish: str | None) -> Step:
        checks = tuple(f(text) for f in self._checks)
        failed = [c for c in checks if not c.passed and c.filter in self._cfg.required_filters]
        before, after = WORDS(parent.text), WORDS(text)
        if failed:
            reason = "; ".join(f"{c.filter}: {c.reason}" for c in failed)
        elif after <= before:
            reason = f"not longer: {before} → {after} words"
        else:
            reason = f"{before} → {after} words"
        return Step(_step_id(sample_id, round_, role), parent.step_id, round_, role, text, before, checks,
                    not failed and after > before, reason, finish)

    def _step(self, sample_id: str, parent: str | None, round_: int, role: str, text: str, before: int,
              finish: str | None, *, accept: bool) -> Step:
        checks = tuple(f(text) for f in self._checks)
        return Step(_step_id(sample_id, round_, role), parent, round_, role, text, before, checks, accept,
                    "the generator's answer", finish)

    async def _ask(self, stage: str, prompt: Prompt, sample_index: int, content: str,
                   template: templates.PromptTemplate, max_tokens: int, prefix: str | None = None) -> Completion:
        return await self._engine.complete(ChatRequest(
            stage=stage, messages=[{"role": "user", "content": content}], max_tokens=max_tokens,
            temperature=self._gen.temperature, top_p=self._gen.top_p, seed=self._seed + sample_index,
            sample_index=sample_index, template=template.identity, assistant_prefix=prefix,
            sample_id=self.sample_id(prompt, sample_index), prompt_id=prompt.prompt_id,
            model=self._roles.get("generator" if stage in ("sl_generate", "sl_continue") else "extender")))


def _step_id(sample_id: str, round_: int, role: str) -> str:
    return row_id(sample_id, round_, role)


@dataclass
class IterationData:
    """Training rows for both roles from one macro iteration's accepted chains."""
    generator: list[dict] = field(default_factory=list)
    extender: list[dict] = field(default_factory=list)


def training_rows(chains: list[tuple[str, str, str]], *, keep: float, seed: int) -> IterationData:
    """From (instruction, first answer, final answer): the generator learns instruction → final answer;
    the extender learns instruction + a noised first answer → final answer."""
    data = IterationData()
    template = templates.load(_TEMPLATES, "self_lengthen_extender_train")
    for k, (instruction, first, final) in enumerate(chains):
        data.generator.append({"messages": [{"role": "user", "content": instruction},
                                            {"role": "assistant", "content": final}]})
        draft = noised(first, keep, seed + k)
        data.extender.append({"messages": [
            {"role": "user", "content": template.render(instruction=instruction, draft=quote("DRAFT", draft))},
            {"role": "assistant", "content": final}]})
    return data


def iteration_folder(build_out: Path, iteration: int) -> Path:
    """Where iteration `iteration`'s training data goes: `<build_out>/self_lengthen/iter_<k>/`, one
    folder per role, each a dataset `longform train sft --dataset` takes."""
    return build_out / "self_lengthen" / f"iter_{iteration}"
