"""AgentWrite on the real embedded model, and its failure paths on a faulty server."""

import asyncio
import json

from longform.config import AgentWriteConfig, GenerationConfig
from longform.endpoint import Endpoint
from longform.prompts import Prompt
from writers.agentwrite import _ELIDED, AgentWrite, Draft, WriteFailure, _Meter

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


def test_agentwrite_plans_and_writes_sections_in_order(embedded, store):
    prompts = [Prompt("en", "Write a short note about rain.", target_words=70),
               Prompt("zh", "写一篇关于月亮的短文。", target_words=60)]
    (en, zh), engine = _write(embedded, store, prompts)
    for draft in (en, zh):
        assert isinstance(draft, Draft), draft
        assert draft.required_source == "target_words"
        assert len(draft.sections) >= 2                          # 60-70 words split into ≤30-word steps
        assert sum(s.planned_words for s in draft.sections) == draft.required_words
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
    cfg = AgentWriteConfig(max_section_words=1000, max_continuations=2, min_section_ratio=0.9)
    with FaultServer() as server:
        server.push(ok(plan), ok("Paragraph 1: ten words " + "w " * 7), ok("more " * 10), ok("again " * 10))
        [draft], _ = _write(_fault_endpoint(server), store, [Prompt("p", "x", target_words=100)], cfg=cfg)
        sent = server.received
    [section] = draft.sections
    assert section.continuations == 2 and len(sent) == 4           # plan + write + 2 continuations, no more
    assert section.text.startswith("ten words")                     # label stripped
    assert "is not finished" in sent[2]["messages"][0]["content"]   # the continuation template
    assert sent[1]["max_tokens"] == 225                             # 100 words × 1.5 tokens/word × 1.5


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
