"""AgentWrite, after LongWriter: plan the answer as numbered paragraphs with word counts, then write
each paragraph conditioned on the instruction, the whole plan and all the text written so far.

Beyond LongWriter, each section is length-controlled: `max_tokens` is sized from its word budget
(with a tokens-per-word ratio measured on the sample's own answers), and a section that comes back
far short of its budget gets a bounded number of continuation requests. When the text so far no
longer fits the model's context window, its oldest part is elided; the plan keeps the whole
structure visible.

A sample's steps run in order; many samples run at once, each advancing as soon as its previous
request returns. Everything that fails becomes a `WriteFailure`, never text.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

from judges.length import WORDS, required_words
from longform.config import AgentWriteConfig, GenerationConfig
from longform.engine import ChatRequest, Completion, Engine, RequestFailed
from longform.ids import SampleIds
from longform.prompts import Prompt
from longform.store import now
from longform import templates
from writers.plan import PLAN_SCHEMA, Step, allocate, parse_plan, render_plan

WRITER = "agentwrite"
_TEMPLATES = Path(__file__).parent / "templates"
_ELIDED = "[… earlier text omitted …]\n\n"


@dataclass(frozen=True)
class Section:
    idx: int
    main_point: str
    planned_words: int
    text: str
    continuations: int
    finish_reason: str | None
    tokens_out: int

    @property
    def words(self) -> int:
        return WORDS(self.text)


@dataclass(frozen=True)
class Draft:
    sample_id: str
    prompt: Prompt
    sample_index: int
    required_words: int
    required_source: str
    plan_source: str
    sections: tuple[Section, ...]

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.sections)

    @property
    def tokens_out(self) -> int:
        return sum(s.tokens_out for s in self.sections)

    def sample_row(self, run_id: str, model: str) -> dict:
        return {"sample_id": self.sample_id, "prompt_id": self.prompt.prompt_id, "run_id": run_id,
                "writer": WRITER, "model": model, "sample_index": self.sample_index, "text": self.text,
                "required_words": self.required_words, "required_source": self.required_source,
                "n_sections": len(self.sections), "plan_source": self.plan_source,
                "tokens_out": self.tokens_out, "created_at": now()}

    def extra_rows(self) -> dict[str, list[dict]]:
        return {"sections": self.section_rows()}

    def section_rows(self) -> list[dict]:
        return [{"sample_id": self.sample_id, "idx": s.idx, "main_point": s.main_point,
                 "planned_words": s.planned_words, "text": s.text, "words": s.words,
                 "length_counter": WORDS.name, "continuations": s.continuations,
                 "finish_reason": s.finish_reason} for s in self.sections]


@dataclass(frozen=True)
class WriteFailure:
    sample_id: str
    prompt: Prompt
    stage: str
    reason: str
    detail: str
    key: str | None = None
    # Rows recorded even though the sample failed (table → rows), e.g. Self-Lengthen's steps.
    extra: dict = field(default_factory=dict, compare=False)

    def extra_rows(self) -> dict[str, list[dict]]:
        return self.extra


def required_length(prompt: Prompt, default_words: int) -> tuple[int, str]:
    if prompt.target_words:
        return prompt.target_words, "target_words"
    found = required_words(prompt.instruction)
    return (found, "instruction") if found else (default_words, "default")


class AgentWrite:
    name = WRITER

    def __init__(self, engine: Engine, cfg: AgentWriteConfig, generation: GenerationConfig, *, seed: int):
        self._engine = engine
        self._sample_ids = SampleIds(self.fingerprint)
        self._cfg = cfg
        self._gen = generation
        self._seed = seed
        structured = engine.endpoint.dialect != "none"
        self._plan_template = templates.load(_TEMPLATES, "agentwrite_plan_json" if structured else "agentwrite_plan_text")
        self._write_template = templates.load(_TEMPLATES, "agentwrite_write")
        self._continue_template = templates.load(_TEMPLATES, "agentwrite_continue")
        self._structured = structured

    def fingerprint(self) -> dict:
        """Everything besides the prompt that shapes a sample; part of its id."""
        return {
            "writer": WRITER,
            "model": self._engine.model,
            "agentwrite": self._cfg.model_dump(mode="json"),
            "generation": self._gen.model_dump(mode="json"),
            "seed": self._seed,
            "templates": [t.identity for t in (self._plan_template, self._write_template, self._continue_template)],
        }

    @property
    def model(self) -> str:
        return self._engine.model

    def sample_id(self, prompt: Prompt, sample_index: int) -> str:
        return self._sample_ids(prompt, sample_index)

    async def write(self, prompt: Prompt, sample_index: int) -> Draft | WriteFailure:
        sample_id = self.sample_id(prompt, sample_index)
        required, source = required_length(prompt, self._cfg.default_words)
        meter = _Meter(self._cfg.tokens_per_word, self._cfg.headroom, self._engine.endpoint.context_window)
        stage = "plan"
        try:
            plan = await self._plan(prompt, sample_index, required, meter)
            if isinstance(plan, WriteFailure):
                return plan
            steps, plan_source = plan
            stage = "write"
            sections = await self._write_sections(prompt, sample_index, steps, meter)
        except RequestFailed as e:
            return WriteFailure(sample_id, prompt, stage, e.reason, e.detail, e.key)
        return Draft(sample_id, prompt, sample_index, required, source, plan_source, tuple(sections))

    async def _plan(self, prompt: Prompt, sample_index: int, required: int,
                    meter: "_Meter") -> tuple[list[Step], str] | WriteFailure:
        content = self._plan_template.render(instruction=prompt.instruction, words=required)
        answer = await self._ask("plan", content, self._cfg.plan_max_tokens, prompt, sample_index,
                                 self._plan_template, json_schema=PLAN_SCHEMA if self._structured else None,
                                 words_left=required)
        meter.observe_prompt(content, answer)
        parsed = parse_plan(answer.text)
        if parsed is None:
            detail = f"finish_reason={answer.finish_reason}; answer: {answer.text[:500]}"
            return WriteFailure(self.sample_id(prompt, sample_index), prompt, "plan", "unparsable_plan",
                                detail, answer.key)
        steps, plan_source = parsed
        budgeted = allocate(steps, required, max_steps=self._cfg.max_steps,
                            max_section_words=self._cfg.max_section_words)
        return budgeted, plan_source

    async def _write_sections(self, prompt: Prompt, sample_index: int, steps: list[Step],
                              meter: "_Meter") -> list[Section]:
        plan_text = render_plan(steps)
        sections: list[Section] = []
        for idx, step in enumerate(steps):
            text, continuations, finish, tokens_out = "", 0, None, 0
            while True:
                template = self._continue_template if text else self._write_template
                written = WORDS(text)
                words = step.words - written if text else step.words
                max_tokens = meter.max_tokens(words)
                prior = "\n\n".join([s.text for s in sections] + ([text] if text else []))
                fill = partial(template.render, instruction=prompt.instruction, plan=plan_text, step=idx + 1,
                               main_point=step.main_point, words=max(words, 1))
                content = meter.fit(fill, prior, max_tokens)
                words_left = sum(s.words for s in steps[idx:]) - written
                answer = await self._ask("write", content, max_tokens, prompt, sample_index, template,
                                         words_left=words_left, section=idx)
                meter.observe_prompt(content, answer)
                piece = strip_label(answer.text)
                meter.observe_text(piece, answer)
                if text and piece:
                    text += (" " if finish == "length" else "\n\n") + piece
                elif piece:
                    text = piece
                finish = answer.finish_reason
                tokens_out += answer.tokens_out
                short = WORDS(text) < self._cfg.min_section_ratio * step.words
                if not short or continuations >= self._cfg.max_continuations:
                    break
                continuations += 1
            if not text:
                # Only a "Paragraph N" label came back: no text to keep, so no sample.
                raise RequestFailed(answer.key, "empty_section",
                                    f"section {idx + 1} had no text after its label: {answer.text[:200]!r}")
            sections.append(Section(idx, step.main_point, step.words, text, continuations, finish, tokens_out))
        return sections

    async def _ask(self, stage: str, content: str, max_tokens: int, prompt: Prompt, sample_index: int,
                   template: templates.PromptTemplate, json_schema: dict | None = None,
                   words_left: int = 0, section: int | None = None) -> Completion:
        return await self._engine.complete(ChatRequest(
            stage=stage,
            messages=[{"role": "user", "content": content}],
            max_tokens=max_tokens,
            temperature=self._gen.temperature,
            top_p=self._gen.top_p,
            seed=self._seed + sample_index,
            json_schema=json_schema,
            sample_index=sample_index,
            template=template.identity,
            # The sample with the most left to write goes first (see engine/throttle.py).
            priority=-words_left,
            sample_id=self.sample_id(prompt, sample_index),
            prompt_id=prompt.prompt_id,
            section=section,
        ))


class _Meter:
    """Token arithmetic for one sample, from ratios measured on its own requests.

    Nothing here is a guess that gets stored: the ratios only size `max_tokens` and decide how
    much old text to elide, and being deterministic functions of cached answers they reproduce the
    same requests (and cache keys) on a rerun.
    """

    def __init__(self, tokens_per_word: float, headroom: float, context_window: int):
        self._default_tpw = tokens_per_word
        self._headroom = headroom
        self._context = context_window
        self._prompt_tokens = self._prompt_chars = 0
        self._text_tokens = self._text_words = self._text_chars = 0

    def observe_prompt(self, content: str, answer: Completion) -> None:
        if answer.tokens_in > 0:
            self._prompt_tokens += answer.tokens_in
            self._prompt_chars += len(content)

    def observe_text(self, piece: str, answer: Completion) -> None:
        if answer.tokens_out > 0:
            self._text_tokens += answer.tokens_out
            self._text_words += WORDS(piece)
            self._text_chars += len(piece)

    def max_tokens(self, words: int) -> int:
        tpw = self._text_tokens / self._text_words if self._text_words >= 20 else self._default_tpw
        return max(32, min(math.ceil(words * tpw * self._headroom), self._context // 2))

    def tokens_per_char(self) -> float:
        ratios = [0.5]  # before any measurement: a conservative 2 chars per token
        if self._prompt_chars:
            ratios = [self._prompt_tokens / self._prompt_chars]
        if self._text_chars:
            ratios.append(self._text_tokens / self._text_chars)
        return max(ratios) * 1.1

    def fit(self, fill: Callable[..., str], prior: str, max_tokens: int) -> str:
        """`fill(text=...)` with the text so far, its oldest part elided until it fits the window."""
        budget = self._context - max_tokens - 64

        def render(text: str) -> str:
            return fill(text=text or "(nothing yet)")

        tpc = self.tokens_per_char()
        content = render(prior)
        while prior and len(content) * tpc > budget:
            excess_chars = math.ceil((len(content) * tpc - budget) / tpc)
            keep = max(0, len(prior) - excess_chars - len(_ELIDED))
            cut = prior[len(prior) - keep:]
            # Start at a paragraph boundary when there is one, so the model sees whole paragraphs.
            boundary = cut.find("\n\n")
            prior = cut[boundary + 2:] if 0 <= boundary < len(cut) // 2 else cut
            content = render(_ELIDED + prior if prior else "")
        return content


_ECHOED_PLAN_LINE = re.compile(r"^\W*(?:paragraph|段落)\s*\d+\b.*(?:main point|word count|字数).*$", re.IGNORECASE)
_LABEL_LINE = re.compile(r"^\W*(?:paragraph\s*\d+|段落\s*\d+|第[\d一二三四五六七八九十]+段)\W*$", re.IGNORECASE)
_LABEL_PREFIX = re.compile(r"^\W*(?:paragraph\s*\d+|段落\s*\d+|第[\d一二三四五六七八九十]+段)\s*[:：.\-–—]+\s*", re.IGNORECASE)


def strip_label(text: str) -> str:
    """Remove "Paragraph N" labels a model puts before a section (LongWriter strips them too)."""
    lines = text.strip().splitlines()
    while lines and (_ECHOED_PLAN_LINE.match(lines[0]) or _LABEL_LINE.match(lines[0]) or not lines[0].strip()):
        lines.pop(0)
    if lines:
        lines[0] = _LABEL_PREFIX.sub("", lines[0])
    return "\n".join(lines).strip()
