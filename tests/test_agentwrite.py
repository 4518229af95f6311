"""AgentWrite on the real embedded model, and its failure paths on a faulty server."""

import asyncio
import json

import pytest
from longform.config import AgentWriteConfig, GenerationConfig
from longform.engine import Completion, Endpoint
from longform.prompts import Prompt
from longform.lengths import WORDS
from writers.agentwrite import _ELIDED, AgentWrite, Draft, _Chat, _Continuation, _Meter
from writers.outcomes import WriteFailure

from conftest import make_engine
from fault_server import FaultServer, ok, status

TINY = AgentWriteConfig(plan_max_tokens=200, max_section_words=30, tokens_per_word=1.5, headroom=1.2,
                        max_continuations=1, min_section_ratio=0.5)


def _write(endpoint, store, prompts, cfg=TINY):
    engine = make_engine(endpoint, store)

    async def go():
        try:
            await engine.check()
            writer = AgentWrite(engine, cfg, GenerationConfig(), seed=0)
            return await asyncio.gather(*(writer.write(p, 0) for p in prompts)), engine
        finally:
            await engine.close()
    return asyncio.run(go())


@pytest.mark.slow
def test_agentwrite_plans_and_writes_sections_in_order(embedded, store):
    prompts = [Prompt("en", "Write a short note about rain.", target_words=70),
               Prompt("zh", "写一篇关于月亮的短文。", target_words=60)]
    (en, zh), engine = _write(embedded, store, prompts)
    for draft in (en, zh):
        assert isinstance(draft, Draft), draft
        assert draft.spec.source == "target_words"
        assert len(draft.sections) >= 2                          # 60-70 words split into ≤30-word steps
        assert sum(s.planned_words for s in draft.sections) == draft.spec.aim
        assert [s.idx for s in draft.sections] == list(range(len(draft.sections)))
        assert all(s.text.strip() for s in draft.sections)
        assert draft.text == "\n\n".join(s.text for s in draft.sections)
        assert not draft.text.lower().startswith("paragraph 1")
    assert engine.stats["plan"].requests == 2
    assert engine.stats["write"].requests >= 4

    store.flush()
    (en_again, zh_again), engine = _write(embedded, store, prompts)
    assert (en_again.text, zh_again.text) == (en.text, zh.text)
    assert engine.totals().requests == 0 and engine.totals().cache_hits > 0


def _fault_endpoint(server):
    return Endpoint(server.base_url, "fault-model", "json_schema", 8192)


def test_unparsable_plan_is_a_failure_not_text(store):
    with FaultServer() as server:
        server.push(ok("I would rather write a poem."))
        [failure], _ = _write(_fault_endpoint(server), store, [Prompt("p", "Write 100 words on tea.")])
    assert isinstance(failure, WriteFailure)
    assert (failure.stage, failure.reason) == ("plan", "unparsable_plan")
    assert "rather write a poem" in failure.detail


def test_failed_section_request_fails_the_sample(store):
    plan = json.dumps({"paragraphs": [{"main_point": "a", "word_count": 50}, {"main_point": "b", "word_count": 50}]})
    with FaultServer() as server:
        server.push(ok(plan), ok("First paragraph " * 30), status(400))
        [failure], _ = _write(_fault_endpoint(server), store, [Prompt("p", "Write 100 words on tea.")])
    assert isinstance(failure, WriteFailure)
    assert (failure.stage, failure.reason) == ("write", "http_400")


def test_short_sections_get_bounded_continuations(store):
    plan = json.dumps({"paragraphs": [{"main_point": "only", "word_count": 100}]})
    cfg = AgentWriteConfig(max_section_words=1000, max_continuations=2, min_section_ratio=0.9, max_extra_sections=0)
    with FaultServer() as server:
        server.push(ok(plan), ok("Paragraph 1: ten words " + "w " * 7), ok("more " * 10), ok("again " * 10))
        [draft], _ = _write(_fault_endpoint(server), store, [Prompt("p", "x", target_words=100)], cfg=cfg)
        sent = server.received
    [section] = draft.sections
    assert section.continuations == 2 and len(sent) == 4           # plan + write + 2 continuations, no more
    assert section.text.startswith("ten words")                     # label stripped
    assert sent[2]["messages"][-1]["content"] == sent[1]["messages"][-1]["content"] + "Paragraph 1: ten words " + \
        "w " * 7 + "\n\n"                                            # the answer so far, continued
    assert sent[1]["max_tokens"] == 150                             # 100 words × 1.5 tokens/word, no headroom


def test_old_text_is_elided_to_fit_the_context_window():
    meter = _Meter(tokens_per_word=1.5, headroom=1.5, context_window=1000)
    prior = "\n\n".join(f"Paragraph number {i} " + "word " * 100 for i in range(20))
    content = meter.fit(lambda text: f"HEADER\n{text}\nFOOTER", prior, max_tokens=200)
    assert len(content) * meter.tokens_per_char() <= 1000 - 200 - 64
    assert content.startswith("HEADER\n" + _ELIDED) and content.endswith("FOOTER")
    assert "Paragraph number 19" in content and "Paragraph number 0 " not in content


def test_a_section_that_is_only_a_label_fails_the_sample(store):
    plan = json.dumps({"paragraphs": [{"main_point": "only", "word_count": 50}]})
    cfg = AgentWriteConfig(max_continuations=0)
    with FaultServer() as server:
        server.push(ok(plan), ok("**Paragraph 1**"))
        [failure], _ = _write(_fault_endpoint(server), store, [Prompt("p", "x", target_words=50)], cfg=cfg)
    assert isinstance(failure, WriteFailure)
    assert (failure.stage, failure.reason) == ("write", "empty_section")


def _plan(*words):
    return ok(json.dumps({"paragraphs": [{"main_point": f"point {i}", "word_count": w} for i, w in enumerate(words)]}))


def _words(n):
    return ok(" ".join(["word"] * (n - 1)) + " end.")


CLOSED = AgentWriteConfig(max_section_words=1000, max_continuations=0, max_extra_sections=2)
# LongWriter's layout says each section's words in its message, which these tests read.
SINGLE = CLOSED.model_copy(update={"layout": "single_message"})


def test_words_still_owed_are_reallocated_over_the_sections_left(store):
    with FaultServer() as server:
        server.push(_plan(100, 100, 100), _words(40), _words(130), _words(130))
        [draft], _ = _write(_fault_endpoint(server), store, [Prompt("p", "x", target_words=300)], cfg=SINGLE)
        sent = [r["messages"][-1]["content"] for r in server.received]
    assert [s.budget_words for s in draft.sections] == [100, 130, 130]   # 260 owed over the two left
    assert [s.planned_words for s in draft.sections] == [100, 100, 100]
    assert "about 130 words" in sent[2] and "about 130 words" in sent[3]
    assert draft.length_stop == "in_band" and draft.sample_row("r", "m")["length_stop"] == "in_band"


def test_a_short_answer_gets_extra_sections_until_it_is_in_band(store):
    with FaultServer() as server:
        server.push(_plan(200), _words(60), _words(80), _words(50))
        [draft], _ = _write(_fault_endpoint(server), store, [Prompt("p", "x", target_words=200)], cfg=SINGLE)
        sent = [r["messages"][-1]["content"] for r in server.received]
    assert [s.words for s in draft.sections] == [60, 80, 50]           # 190 is inside 180..220: stop
    assert [s.planned_words for s in draft.sections] == [200, 0, 0]
    assert [s.budget_words for s in draft.sections][1:] == [140, 60]
    assert "still too short" in sent[2] and "about 140 more words" in sent[2]
    assert draft.length_stop == "extended_in_band" and len(sent) == 4


def test_extra_sections_stop_at_their_budget_and_say_so(store):
    with FaultServer() as server:
        server.push(_plan(200), _words(30), _words(20), _words(20))
        [draft], _ = _write(_fault_endpoint(server), store, [Prompt("p", "x", target_words=200)], cfg=CLOSED)
        assert len(server.received) == 4                                # plan, section, 2 extras, no more
    assert draft.length_stop == "extra_budget_spent"


def test_an_answer_past_its_band_stops_early(store):
    with FaultServer() as server:
        server.push(_plan(100, 100, 100), _words(340))
        [draft], _ = _write(_fault_endpoint(server), store, [Prompt("p", "x", target_words=300)], cfg=CLOSED)
        assert len(server.received) == 2
    assert len(draft.sections) == 1 and draft.length_stop == "stopped_early_over_band"


def test_a_bound_is_planned_inside_and_scored_by_kind(store):
    with FaultServer() as server:
        server.push(_plan(360), _words(350))
        [draft], _ = _write(_fault_endpoint(server), store,
                            [Prompt("p", "Write no more than 400 words about tides.")], cfg=CLOSED)
        plan_request = server.received[0]["messages"][0]["content"]
    assert "about 360 words" in plan_request                              # 90% of the bound
    row = draft.sample_row("r", "m")
    assert (row["length_kind"], row["length_high"], row["required_words"]) == ("at_most", 400, 360)
    assert row["length_span"] == "no more than 400 words" and row["required_source"] == "instruction"


def test_open_loop_keeps_longwriters_behaviour(store):
    cfg = AgentWriteConfig(max_section_words=1000, max_continuations=0, length_control=False)
    with FaultServer() as server:
        server.push(_plan(100, 100), _words(20), _words(20))
        [draft], _ = _write(_fault_endpoint(server), store, [Prompt("p", "x", target_words=200)], cfg=cfg)
        assert len(server.received) == 3
    assert [s.budget_words for s in draft.sections] == [100, 100] and draft.length_stop == "plan_done"


def test_an_upper_bound_caps_max_tokens_so_the_answer_cannot_cross_it(store):
    cfg = AgentWriteConfig(max_section_words=1000, max_continuations=0, max_extra_sections=0)
    with FaultServer() as server:
        # A model that writes as much as it is allowed: one word per token.
        server.answer = lambda body: ok(" ".join(["word"] * (body["max_tokens"] - 1)) + " end.")
        server.push(_plan(90))
        [draft], _ = _write(_fault_endpoint(server), store, [Prompt("p", "Write no more than 100 words on tea.")],
                            cfg=cfg)
        sent = server.received
    assert sent[1]["max_tokens"] == 100                       # not 90 × 1.5 × 1.5 = 203
    assert draft.sample_row("r", "m")["length_high"] == 100 and WORDS(draft.text) <= 100


def test_a_sample_is_one_chat_so_each_request_extends_the_last(store):
    """The conversation layout: every request begins with the previous request and its answer,
    verbatim (labels included), so a prefix cache holds all that was written."""
    answers = ["Paragraph 1: the first one. " + "a " * 20, "b " * 30, "c " * 30]
    with FaultServer() as server:
        server.push(_plan(30, 30, 30), *(ok(a) for a in answers))
        [draft], _ = _write(_fault_endpoint(server), store, [Prompt("p", "Write about tea.", target_words=90)],
                            cfg=CLOSED.model_copy(update={"layout": "conversation"}))
        sent = [r["messages"] for r in server.received]
    assert len(sent) == 4 and draft.sections[0].text.startswith("the first one")
    for before, after, answer in zip(sent, sent[1:], [server_plan_text(sent), *answers]):
        assert after[:len(before)] == before
        assert after[len(before)] == {"role": "assistant", "content": answer}
        assert after[-1]["role"] == "user" and len(after) == len(before) + 2
    assert "Write paragraph 2 of the plan: point 1" in sent[2][-1]["content"]
    assert "Write about tea." in sent[0][0]["content"] and len(sent[3]) == 7


def server_plan_text(sent):
    return sent[1][1]["content"]


def test_longwriters_single_message_layout_is_kept(store):
    cfg = CLOSED.model_copy(update={"layout": "single_message"})
    with FaultServer() as server:
        server.push(_plan(30, 30), _words(30), _words(30))
        [draft], _ = _write(_fault_endpoint(server), store, [Prompt("p", "Write about tea.", target_words=60)], cfg=cfg)
        sent = [r["messages"] for r in server.received]
    assert all(len(m) == 1 for m in sent)
    assert "Text written so far:\n(nothing yet)" in sent[1][0]["content"]
    assert draft.sections[0].text in sent[2][0]["content"] and "Plan:" in sent[2][0]["content"]


def test_a_chat_too_long_for_the_window_drops_its_oldest_turns_a_block_at_a_time():
    meter = _Meter(tokens_per_word=1.5, headroom=1.5, context_window=1000)
    chat = _Chat("PLAN REQUEST", "PLAN", meter)
    asked = []
    for i in range(30):
        messages = chat.ask(f"write {i}", max_tokens=100)
        asked.append(messages)
        chat.answered(f"write {i}", f"Section {i} " + "word " * 30)
    size = lambda ms: sum(len(m["content"]) for m in ms) * meter.tokens_per_char() + 8 * len(ms)
    assert all(size(ms) <= 1000 - 100 - 64 for ms in asked)
    assert all(ms[:2] == [{"role": "user", "content": "PLAN REQUEST"}, {"role": "assistant", "content": "PLAN"}]
               for ms in asked)
    assert chat.elided and "Section 0 " not in str(asked[-1]) and "Section 28 " in str(asked[-1])
    # A cut frees room for several more turns: most requests still extend the one before.
    extends = sum(after[:len(before)] == before for before, after in zip(asked, asked[1:]))
    cuts = len(asked) - 1 - extends
    assert cuts >= 1 and extends >= 2 * cuts   # one turn at a time would cut at every request


def test_reallocated_budgets_size_each_continued_sections_token_cap(store):
    with FaultServer() as server:
        server.push(_plan(100, 100, 100), _words(40), _words(130), _words(130))
        [draft], _ = _write(_fault_endpoint(server), store, [Prompt("p", "x", target_words=300)], cfg=CLOSED)
        caps = [r["max_tokens"] for r in server.received][1:]
    assert [s.budget_words for s in draft.sections] == [100, 130, 130]
    # 1.5 tokens a word until 20 words are measured, then the sample's own ratio (1 here), no headroom.
    assert caps == [150, 130, 130]


def test_the_continuation_layout_asks_each_time_for_more_of_the_same_answer(store):
    """One fixed message, the text so far (verbatim) as the start of the answer: every request is the
    one before plus its answer, so a prefix cache reads no written token twice."""
    cfg = CLOSED
    answers = ["Paragraph 1: tea grows on hills. " + "a " * 25, "b " * 30, "c " * 30]
    with FaultServer() as server:
        server.push(_plan(30, 30, 30), *(ok(a) for a in answers))
        [draft], _ = _write(_fault_endpoint(server), store, [Prompt("p", "Write about tea.", target_words=90)], cfg=cfg)
        sent = [r["messages"] for r in server.received][1:]
    assert len(sent) == 3 and all(len(m) == 2 and m[1]["role"] == "assistant" for m in sent)
    assert len({m[0]["content"] for m in sent}) == 1 and "Write about tea." in sent[0][0]["content"]
    prefixes = [m[1]["content"] for m in sent]
    assert prefixes[0] == ""
    assert prefixes[1] == answers[0] + "\n\n" and prefixes[2] == prefixes[1] + answers[1] + "\n\n"
    assert draft.sections[0].text.startswith("tea grows") and [s.words for s in draft.sections] == [29, 30, 30]


def test_a_cut_paragraph_is_continued_in_place_and_old_text_elided_in_blocks():
    meter = _Meter(tokens_per_word=1.5, headroom=1.5, context_window=1000)
    cont = _Continuation("INSTRUCTION AND PLAN", meter)
    prefixes = []
    for i in range(30):
        cont.ask("", max_tokens=100, joined=i == 1)
        prefixes.append(cont.prefix)
        cont.answered("", f"Part {i} " + "word " * 30)
    assert prefixes[2].startswith("Part 0 ") and "word Part 1 " in prefixes[2]     # continued in place
    assert all((len(p) + len("INSTRUCTION AND PLAN")) * meter.tokens_per_char() + 16 <= 1000 - 100 - 64
               for p in prefixes)
    assert cont.elided and prefixes[-1].startswith(_ELIDED) and "Part 0 " not in prefixes[-1]
    extends = sum(b.startswith(a) for a, b in zip(prefixes, prefixes[1:]))
    assert extends >= 2 * (len(prefixes) - 1 - extends)   # one paragraph at a time would cut at every request


def test_an_endpoint_that_cannot_continue_an_answer_gets_longwriters_layout(store):
    endpoint = Endpoint("http://127.0.0.1:9/v1", "m", "json_schema", 8192, continuation="none")
    writer = AgentWrite(make_engine(endpoint, store), CLOSED, GenerationConfig(), seed=0)
    assert writer.layout == "single_message" and writer.fingerprint()["agentwrite"]["layout"] == "single_message"
    assert AgentWrite(make_engine(_fault_endpoint_at("http://127.0.0.1:9"), store), CLOSED, GenerationConfig(),
                      seed=0).layout == "continuation"


def _fault_endpoint_at(url):
    return Endpoint(url + "/v1", "m", "json_schema", 8192)


def test_where_the_model_ends_its_piece_early_the_section_is_asked_for_by_name(store):
    """An empty continuation (the model's end of sequence right away) is not a failed sample: that
    section is asked for in LongWriter's form, and the continuation goes on after it."""
    with FaultServer() as server:
        server.push(_plan(50, 50), _words(50), ok(""), _words(50))
        [draft], _ = _write(_fault_endpoint(server), store, [Prompt("p", "Write about tea.", target_words=100)],
                            cfg=CLOSED)
        sent = [r["messages"] for r in server.received]
    assert not isinstance(draft, WriteFailure) and [s.words for s in draft.sections] == [50, 50]
    assert sent[2][-1]["role"] == "assistant"                                 # the continuation that ended
    assert len(sent[3]) == 1 and "Now write paragraph 2 of the plan: point 1" in sent[3][0]["content"]
    with FaultServer() as server:                 # the empty continuation is an answer: a rerun asks nothing
        [again], _ = _write(_fault_endpoint(server), store, [Prompt("p", "Write about tea.", target_words=100)],
                            cfg=CLOSED)
        assert server.received == [] and again.text == draft.text


def test_a_section_of_tokens_without_words_stops_the_sample(store):
    """A looping model (ids, markup) writes many tokens and few words: the word count alone would read
    it as short and ask for continuations and extra sections, each sized from its inflated ratio."""
    loop = "[pre-packgift_2019C483F7EB6D5AAB] **[x]**\n" * 20           # 2 words a line ("pre", "x"), 15 tokens each
    cfg = CLOSED.model_copy(update={"max_continuations": 2, "max_tokens_per_word": 4.0})
    with FaultServer() as server:
        server.push(_plan(100, 100, 100), {**_words(100), "tokens_out": 130},
                    {**ok(loop), "tokens_out": 600}, _words(100))
        [draft], _ = _write(_fault_endpoint(server), store, [Prompt("p", "x", target_words=300)], cfg=cfg)
        sent = server.received
    assert len(sent) == 3                                   # plan, section 1, section 2: no continuation, no section 3
    assert draft.length_stop == "degenerate_text" and len(draft.sections) == 2
    assert draft.sections[1].text == loop.strip() and draft.sections[1].continuations == 0   # kept, as written

    open_loop = cfg.model_copy(update={"length_control": False})      # LongWriter's: every planned section
    with FaultServer() as server:
        server.push(_plan(100, 100, 100), {**_words(100), "tokens_out": 130},
                    {**ok(loop), "tokens_out": 600}, _words(100))
        [draft], _ = _write(_fault_endpoint(server), store, [Prompt("p", "y", target_words=300)], cfg=open_loop)
    assert len(draft.sections) == 3 and draft.length_stop == "plan_done" and draft.sections[1].continuations == 0


def test_a_measured_ratio_above_the_cap_does_not_size_requests():
    meter = _Meter(tokens_per_word=1.5, headroom=1.0, context_window=8192, max_tokens_per_word=4.0)
    answer = Completion("k", "a b c d e f g h i j " * 3, "length", tokens_in=10, tokens_out=300, cached=False)
    meter.observe_text(answer.text, answer)                 # 30 words in 300 tokens: 10 per word
    assert meter.max_tokens(100) == 400                     # 100 words × 4, not × 10
    assert meter.degenerate(answer.text, answer)
    assert not meter.degenerate("a b", Completion("k", "a b", "stop", tokens_in=1, tokens_out=40, cached=False))
