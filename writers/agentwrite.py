"""AgentWrite, after LongWriter: plan the answer as numbered paragraphs with word counts, then write
each paragraph conditioned on the instruction, the whole plan and all the text written so far.

Beyond LongWriter, the length is controlled in a closed loop. The plan aims at the spec's aim (a
bound's inside, a range's middle: longform/lengths.py). Each section's `max_tokens` is sized from
its word budget (with a tokens-per-word ratio measured on the sample's own answers), and a section
that comes back far short of its budget gets a bounded number of continuation requests. After each
section the words still owed are re-allocated over the sections left, in the plan's proportions;
an answer already past the spec's band stops early, and one still short of it when the plan is done
gets extra sections (`max_extra_sections`). Words are what is counted but tokens are what is paid:
an answer spending more tokens per word than natural text (`max_tokens_per_word`: a small model
looping on ids or markup) stops the sample, where the loop would otherwise read as "too short" and
be given more. Why it stopped is stored (`length_stop`). When the text
so far no longer fits the model's context window, its oldest part is elided; the plan keeps the
whole structure visible.

Three layouts (`[agentwrite] layout`), each showing the model the instruction, the plan and the
text so far. What differs is what a server with a prefix cache (llama.cpp's slot, vLLM's and
SGLang's prefix caching) can reuse from one request of a sample to the next:
- "continuation" (the default): one fixed user message (instruction and plan) and the text so far,
  verbatim, as the start of the assistant's answer, which the model continues; each request is the
  previous one plus its answer, so no written token is read twice. Nothing in it names the section:
  the token cap is the section's budget (no headroom), and the model follows the plan's order.
- "single_message": LongWriter's own, one user message with the text so far followed by which
  paragraph to write and how long; the cache reuses it up to the text so far, so each section is
  read once more by the next request.
- "conversation": the plan request and its answer, then one user turn per section with each answer
  kept verbatim; as cheap as the continuation, but SmolLM2-135M copies its previous turn in it
  (benchmarks/embedded_speed.py, issue 24's note), so it is for larger models.
On the embedded model the continuation writes closer to the asked length than LongWriter's layout
(benchmarks/length_fidelity.py --layout). When the text outgrows the context window, its oldest
part is left out a quarter of the window at a time, so the requests after a cut share a prefix again.

A sample's steps run in order; many samples run at once, each advancing as soon as its previous
request returns. Everything that fails becomes a `WriteFailure`, never text.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, ClassVar

from longform.config import AgentWriteConfig, GenerationConfig
from longform.engine import ChatRequest, Completion, Engine, RequestFailed
from longform.ids import SampleIds
from longform.length_reader import spec_for
from longform.lengths import WORDS, LengthSpec
from longform.prompts import Prompt
from longform.reasons import FailureReason, LengthStop
from longform.clock import now
from longform import templates
from writers.outcomes import WriteFailure
from writers.plan import PLAN_SCHEMA, Step, allocate, parse_plan, render_plan

WRITER = "agentwrite"
_TEMPLATES = Path(__file__).parent / "templates"
_ELIDED = "[… earlier text omitted …]\n\n"


@dataclass(frozen=True)
class Section:
    idx: int
    main_point: str
    planned_words: int     # 0 for a section added by length control
    budget_words: int      # what it was asked for, after re-allocation
    text: str
    continuations: int
    finish_reason: str | None
    tokens_out: int
    elided: bool = False   # the text so far did not fit the window and its oldest part was left out

    @property
    def words(self) -> int:
        return WORDS(self.text)


@dataclass(frozen=True)
class Draft:
    failed: ClassVar[bool] = False
    sample_id: str
    prompt: Prompt
    sample_index: int
    spec: LengthSpec
    plan_source: str
    sections: tuple[Section, ...]
    length_stop: LengthStop

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.sections)

    @property
    def tokens_out(self) -> int:
        return sum(s.tokens_out for s in self.sections)

    def sample_row(self, run_id: str, model: str) -> dict:
        return {"sample_id": self.sample_id, "prompt_id": self.prompt.prompt_id, "run_id": run_id,
                "writer": WRITER, "model": model, "sample_index": self.sample_index, "text": self.text,
                **self.spec.columns(), "length_stop": self.length_stop,
                "n_sections": len(self.sections), "plan_source": self.plan_source,
                "tokens_out": self.tokens_out, "created_at": now()}

    def extra_rows(self) -> dict[str, list[dict]]:
        return {"sections": self.section_rows()}

    def section_rows(self) -> list[dict]:
        return [{"sample_id": self.sample_id, "idx": s.idx, "main_point": s.main_point,
                 "planned_words": s.planned_words, "budget_words": s.budget_words, "text": s.text, "words": s.words,
                 "length_counter": WORDS.name, "continuations": s.continuations,
                 "finish_reason": s.finish_reason, "elided": s.elided} for s in self.sections]


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
        self._extend_template = templates.load(_TEMPLATES, "agentwrite_extend")
        # LongWriter's own requests, which name the section: the continuation layout falls back on them
        # where the model ends its piece before the plan and the length are done.
        self._single = (self._write_template, self._continue_template, self._extend_template)
        # An endpoint that cannot continue an assistant message ([endpoint] continuation = "none")
        # gets LongWriter's layout instead of the continuation.
        self.layout = "single_message" if cfg.layout == "continuation" and \
            engine.endpoint.continuation == "none" else cfg.layout
        if self.layout == "conversation":
            # The same three requests as turns of the sample's chat (see the module docstring).
            self._write_template, self._continue_template, self._extend_template = (
                templates.load(_TEMPLATES, f"agentwrite_turn_{kind}") for kind in ("write", "continue", "extend"))
        elif self.layout == "continuation":
            # One message for every request of a sample; the text so far is the answer's start.
            self._write_template = self._continue_template = self._extend_template = \
                templates.load(_TEMPLATES, "agentwrite_write_all")
        self._structured = structured

    def fingerprint(self) -> dict:
        """Everything besides the prompt that shapes a sample; part of its id."""
        return {
            "writer": WRITER,
            "model": self._engine.model,
            "agentwrite": {**self._cfg.model_dump(mode="json"), "layout": self.layout},
            "generation": self._gen.model_dump(mode="json"),
            "seed": self._seed,
            "templates": [t.identity for t in (self._plan_template, self._write_template, self._continue_template,
                                               self._extend_template)]
            + ([t.identity for t in self._single] if self.layout == "continuation" else []),
        }

    @property
    def model(self) -> str:
        return self._engine.model

    def sample_id(self, prompt: Prompt, sample_index: int) -> str:
        return self._sample_ids(prompt, sample_index)

    async def write(self, prompt: Prompt, sample_index: int) -> Draft | WriteFailure:
        sample_id = self.sample_id(prompt, sample_index)
        spec = self.spec(prompt)
        # In the continuation layout nothing tells the model how long a section should be: it writes
        # on until its token cap, so the cap is the section's budget, with no headroom above it.
        headroom = 1.0 if self.layout == "continuation" else self._cfg.headroom
        meter = _Meter(self._cfg.tokens_per_word, headroom, self._engine.endpoint.context_window,
                       self._cfg.max_tokens_per_word)
        stage = "plan"
        try:
            plan = await self._plan(prompt, sample_index, spec.aim, meter)
            if isinstance(plan, WriteFailure):
                return plan
            steps, plan_source, chat = plan
            stage = "write"
            sections, stop = await self._write_sections(prompt, sample_index, steps, spec, meter, chat)
        except RequestFailed as e:
            return WriteFailure(sample_id, prompt, stage, e.reason, e.detail, e.key)
        return Draft(sample_id, prompt, sample_index, spec, plan_source, tuple(sections), stop)

    def spec(self, prompt: Prompt) -> LengthSpec:
        return spec_for(prompt, self._cfg.default_words)

    async def _plan(self, prompt: Prompt, sample_index: int, required: int,
                    meter: "_Meter") -> tuple[list[Step], str, "_Chat | None"] | WriteFailure:
        """The budgeted steps, where they were read from, and what the sections continue: the chat
        (conversation layout), the answer (continuation layout), or None (single message)."""
        content = self._plan_template.render(instruction=prompt.instruction, words=required)
        answer = await self._ask("plan", content, self._cfg.plan_max_tokens, prompt, sample_index,
                                 self._plan_template, json_schema=PLAN_SCHEMA if self._structured else None,
                                 words_left=required)
        meter.observe_prompt(content, answer)
        parsed = parse_plan(answer.text)
        if parsed is None:
            detail = f"finish_reason={answer.finish_reason}; answer: {answer.text[:500]}"
            return WriteFailure(self.sample_id(prompt, sample_index), prompt, "plan", FailureReason.UNPARSABLE_PLAN,
                                detail, answer.key)
        steps, plan_source = parsed
        budgeted = allocate(steps, required, max_steps=self._cfg.max_steps,
                            max_section_words=self._cfg.max_section_words)
        chat = None
        if self.layout == "conversation":
            chat = _Chat(content, answer.text, meter)
        elif self.layout == "continuation":
            chat = _Continuation(self._write_template.render(instruction=prompt.instruction,
                                                             plan=render_plan(budgeted)), meter)
        return budgeted, plan_source, chat

    async def _write_sections(self, prompt: Prompt, sample_index: int, steps: list[Step], spec: LengthSpec,
                              meter: "_Meter", chat: "_Chat | None") -> tuple[list[Section], str]:
        """The sections, and why length control stopped adding text."""
        plan_text = render_plan(steps)
        low, high = spec.band
        control = self._cfg.length_control
        # An upper bound the answer must not cross (at most, range): no request may ask for more
        # tokens than there are words left under it (a word or CJK character takes at least one
        # token), so an overshooting section is cut, not kept whole. A measured tokens-per-word
        # ratio is not enough: a small model switches language mid-answer (benchmarks/length_fidelity.py
        # saw 2.5 tokens per unit in one section and 1.3 in the next).
        ceiling = spec.high if control and spec.kind in ("at_most", "range") else None
        sections: list[Section] = []
        total = 0
        for idx, step in enumerate(steps):
            if control and total >= high:
                return sections, LengthStop.STOPPED_EARLY_OVER_BAND
            # Re-allocate what is still owed over the sections left, in the plan's proportions.
            owed = spec.aim - total
            share = step.words / max(1, sum(s.words for s in steps[idx:]))
            budget = max(min(_MIN_SECTION_WORDS, step.words), round(owed * share)) if control else step.words
            values = {"instruction": prompt.instruction, "plan": plan_text, "step": idx + 1,
                      "main_point": step.main_point}
            section = await self._section(prompt, sample_index, idx, step.main_point, step.words, budget, values,
                                          sections, meter, chat, words_left=max(owed, budget),
                                          room=high - total if control else None,
                                          hard=None if ceiling is None else ceiling - total)
            if not section.text:
                # Only a "Paragraph N" label came back: no text to keep, so no sample.
                raise RequestFailed(section.key, FailureReason.EMPTY_SECTION,
                                    f"section {idx + 1} had no text after its label: {section.raw[:200]!r}")
            sections.append(section.section)
            total += section.section.words
            if control and section.degenerate:
                return sections, LengthStop.DEGENERATE_TEXT
        if not control:
            return sections, LengthStop.PLAN_DONE
        for _ in range(self._cfg.max_extra_sections):
            if total >= low:
                break
            budget = min(spec.aim - total, self._cfg.max_section_words)
            values = {"instruction": prompt.instruction, "plan": plan_text}
            section = await self._section(prompt, sample_index, len(sections), "(added by length control)", 0,
                                          budget, values, sections, meter, chat, words_left=spec.aim - total,
                                          room=high - total, pair=(self._extend_template,) * 2,
                                          fallback=(self._single[2],) * 2,
                                          hard=None if ceiling is None else ceiling - total)
            if not section.text:
                return sections, LengthStop.EXTRA_SECTION_EMPTY
            sections.append(section.section)
            total += section.section.words
            if section.degenerate:
                return sections, LengthStop.DEGENERATE_TEXT
        if total < low:
            short = LengthStop.EXTRA_BUDGET_SPENT if self._cfg.max_extra_sections else LengthStop.PLAN_DONE_SHORT
            return sections, short
        if total > high:
            return sections, LengthStop.OVER_BAND
        return sections, LengthStop.IN_BAND if len(sections) == len(steps) else LengthStop.EXTENDED_IN_BAND

    async def _section(self, prompt: Prompt, sample_index: int, idx: int, main_point: str, planned: int,
                       budget: int, values: dict, before: list[Section], meter: "_Meter", chat: "_Chat | None", *,
                       words_left: int,
                       room: int | None, pair: tuple[templates.PromptTemplate, templates.PromptTemplate] | None = None,
                       fallback: tuple[templates.PromptTemplate, templates.PromptTemplate] | None = None,
                       hard: int | None = None) -> "_Written":
        """One section: its first request, then continuations while it is far short of its budget
        (and, under length control, while the answer has room left in its band)."""
        first, then = pair or (self._write_template, self._continue_template)
        fallback = fallback or self._single[:2]
        text, continuations, finish, tokens_out, elided, degenerate = "", 0, None, 0, False, False
        while True:
            written = WORDS(text)
            words = max(budget - written, 1)
            max_tokens = meter.max_tokens(words)
            if hard is not None:
                max_tokens = min(max_tokens, meter.tokens_for(hard - written))
            template = then if text else first
            if chat is None:
                messages = _single_message(template, values, words, before, text, meter, max_tokens)
                elided = elided or meter.elided
            else:
                content = template.render(**values, words=words)
                messages = chat.ask(content, max_tokens, joined=finish == "length")
                elided = elided or chat.elided
            prefix = chat.prefix if chat is not None else None
            answer = await self._ask("write", messages, max_tokens, prompt, sample_index, template,
                                     words_left=words_left - written, section=idx, assistant_prefix=prefix)
            if prefix is not None and not answer.text.strip():
                # The model ended its piece here (nothing but the end of sequence: an answer, cached
                # as such). Ask for this section in LongWriter's form, which names it and its length;
                # the continuation goes on from its answer.
                template = fallback[1] if text else fallback[0]
                messages = _single_message(template, values, words, before, text, meter, max_tokens)
                prefix = None
                answer = await self._ask("write", messages, max_tokens, prompt, sample_index, template,
                                         words_left=words_left - written, section=idx)
            meter.observe_prompt("".join(m["content"] for m in messages) + (prefix or ""), answer)
            if chat is not None:
                chat.answered(content, answer.text)
            piece = strip_label(answer.text)
            meter.observe_text(piece, answer)
            degenerate = meter.degenerate(piece, answer)
            if text and piece:
                text += (" " if finish == "length" else "\n\n") + piece
            elif piece:
                text = piece
            finish = answer.finish_reason
            tokens_out += answer.tokens_out
            written = WORDS(text)
            short = written < self._cfg.min_section_ratio * budget
            no_room = room is not None and written >= room
            if not text or not short or no_room or degenerate or continuations >= self._cfg.max_continuations:
                break
            continuations += 1
        return _Written(Section(idx, main_point, planned, budget, text, continuations, finish, tokens_out, elided),
                        answer.key, answer.text, degenerate)

    async def _ask(self, stage: str, content: str | list[dict], max_tokens: int, prompt: Prompt, sample_index: int,
                   template: templates.PromptTemplate, json_schema: dict | None = None,
                   words_left: int = 0, section: int | None = None, assistant_prefix: str | None = None) -> Completion:
        return await self._engine.complete(ChatRequest(
            assistant_prefix=assistant_prefix,
            allow_empty=assistant_prefix is not None,
            stage=stage,
            messages=[{"role": "user", "content": content}] if isinstance(content, str) else content,
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


# A re-allocated section is asked for at least this many words (or its planned count if smaller), so
# a section the plan promised is still written, briefly, when the words are nearly all spent.
_MIN_SECTION_WORDS = 80
# An answer shorter than this is not judged degenerate: a few tokens of markup ("**", a blank line)
# have a high tokens-per-word ratio and mean nothing.
_MIN_JUDGED_TOKENS = 64


@dataclass(frozen=True)
class _Written:
    section: Section
    key: str | None
    raw: str
    degenerate: bool = False   # its last answer spent more tokens per word than natural text (_Meter.degenerate)

    @property
    def text(self) -> str:
        return self.section.text


class _Meter:
    """Token arithmetic for one sample, from ratios measured on its own requests.

    Nothing here is a guess that gets stored: the ratios only size `max_tokens` and decide how
    much old text to elide, and being deterministic functions of cached answers they reproduce the
    same requests (and cache keys) on a rerun.
    """

    def __init__(self, tokens_per_word: float, headroom: float, context_window: int,
                 max_tokens_per_word: float = math.inf):
        self._default_tpw = tokens_per_word
        self.max_tpw = max_tokens_per_word
        self._headroom = headroom
        self.context = context_window
        self._prompt_tokens = self._prompt_chars = 0
        self._text_tokens = self._text_words = self._text_chars = 0
        self.elided = False   # whether the last `fit` left old text out

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
        tpw = min(tpw, self.max_tpw)
        return max(32, min(math.ceil(words * tpw * self._headroom), self.context // 2))

    def degenerate(self, piece: str, answer: Completion) -> bool:
        """Whether an answer spent more tokens per word than natural text does (see
        AgentWriteConfig.max_tokens_per_word); short answers are not judged."""
        return answer.tokens_out >= _MIN_JUDGED_TOKENS and answer.tokens_out > self.max_tpw * max(1, WORDS(piece))

    @staticmethod
    def tokens_for(words: int) -> int:
        """The most tokens that cannot make more than `words` words: one each (the worst case)."""
        return max(8, words)

    def tokens_per_char(self) -> float:
        ratios = [0.5]  # before any measurement: a conservative 2 chars per token
        if self._prompt_chars:
            ratios = [self._prompt_tokens / self._prompt_chars]
        if self._text_chars:
            ratios.append(self._text_tokens / self._text_chars)
        return max(ratios) * 1.1

    def fit(self, fill: Callable[..., str], prior: str, max_tokens: int) -> str:
        """`fill(text=...)` with the text so far, its oldest part elided until it fits the window."""
        budget = self.context - max_tokens - 64

        def render(text: str) -> str:
            return fill(text=text or "(nothing yet)")

        tpc = self.tokens_per_char()
        content = render(prior)
        self.elided = False
        while prior and len(content) * tpc > budget:
            excess_chars = math.ceil((len(content) * tpc - budget) / tpc)
            keep = max(0, len(prior) - excess_chars - len(_ELIDED))
            cut = prior[len(prior) - keep:]
            # Start at a paragraph boundary when there is one, so the model sees whole paragraphs.
            boundary = cut.find("\n\n")
            prior = cut[boundary + 2:] if 0 <= boundary < len(cut) // 2 else cut
            content = render(_ELIDED + prior if prior else "")
            self.elided = True
        return content


def _single_message(template: templates.PromptTemplate, values: dict, words: int, before: list[Section], text: str,
                    meter: "_Meter", max_tokens: int) -> list[dict]:
    """LongWriter's request: one user message with the text so far (the sections before, then this
    one's text), its oldest part elided to fit the window."""
    prior = "\n\n".join([s.text for s in before] + ([text] if text else []))
    return [{"role": "user", "content": meter.fit(partial(template.render, **values, words=words), prior, max_tokens)}]


class _Chat:
    """A sample written as one conversation (the "conversation" layout): the plan request and its
    answer, then a user turn and the model's verbatim answer per request.

    Answers are kept exactly as they came back (labels and all), because a prefix cache matches
    tokens: the next request then starts with the very tokens the server has just evaluated. When
    the chat would not leave room for an answer in the context window, the oldest section turns are
    left out, and enough of them at once to free a quarter of the window, so the following requests
    share their prefix again instead of each cutting one more turn. The plan stays.
    """

    # Tokens a turn's chat markup takes (role markers, separators), on top of its text.
    _TURN_TOKENS = 8

    def __init__(self, plan_request: str, plan_answer: str, meter: "_Meter"):
        self._head = [{"role": "user", "content": plan_request}, {"role": "assistant", "content": plan_answer}]
        self._turns: list[tuple[str, str]] = []
        self._meter = meter
        self._dropped = 0

    @property
    def elided(self) -> bool:
        return self._dropped > 0

    prefix = None  # nothing of the answer is given: each turn is answered anew

    def ask(self, turn: str, max_tokens: int, joined: bool = False) -> list[dict]:
        """The messages of the next request, ending with `turn`."""
        budget = self._meter.context - max_tokens - 64
        if self._tokens(turn, self._dropped) > budget:
            while self._dropped < len(self._turns) and \
                    self._tokens(turn, self._dropped) > budget - self._meter.context // 4:
                self._dropped += 1
        messages = list(self._head)
        for user, assistant in self._turns[self._dropped:]:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        return messages + [{"role": "user", "content": turn}]

    def answered(self, turn: str, answer: str) -> None:
        self._turns.append((turn, answer))

    def _tokens(self, turn: str, dropped: int) -> float:
        texts = [m["content"] for m in self._head] + [t for pair in self._turns[dropped:] for t in pair] + [turn]
        return sum(len(t) for t in texts) * self._meter.tokens_per_char() + self._TURN_TOKENS * len(texts)


class _Continuation:
    """A sample written as one answer continued (the "continuation" layout): every request is the
    same user message (instruction and plan) with the text written so far, verbatim, as the start
    of the assistant's answer. Each request is the previous one plus its answer, so a prefix cache
    never reads a written token twice. A paragraph cut at its token cap is continued in place; a
    new one starts after a blank line. When the text outgrows the window, its oldest part is
    replaced by an omission mark, a quarter of the window at a time, so later requests again share
    a prefix.
    """

    def __init__(self, message: str, meter: "_Meter"):
        self._messages = [{"role": "user", "content": message}]
        self._meter = meter
        self._text = ""        # every answer, verbatim, with the separators they were asked with
        self._start = 0        # where the part still shown starts
        self.prefix = ""

    @property
    def elided(self) -> bool:
        return self._start > 0

    def ask(self, turn: str, max_tokens: int, joined: bool = False) -> list[dict]:
        if self._text:
            # A paragraph cut at its token cap goes on exactly where it stopped.
            self._text += "" if joined else "\n\n"
        budget = self._meter.context - max_tokens - 64
        tpc = self._meter.tokens_per_char()
        fixed = len(self._messages[0]["content"]) * tpc + 16
        if fixed + (len(self._text) - self._start) * tpc > budget:
            keep = max(0, int((budget - self._meter.context // 4 - fixed) / tpc))
            cut = len(self._text) - keep
            boundary = self._text.find("\n\n", cut)
            self._start = boundary + 2 if 0 <= boundary < cut + keep // 2 else cut
        shown = self._text[self._start:]
        self.prefix = (_ELIDED + shown) if self._start else shown
        return self._messages

    def answered(self, turn: str, answer: str) -> None:
        self._text += answer


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
