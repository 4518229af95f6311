"""The judges of a prompt are asked grouped by the candidate shown first, so that on a one-slot
server each request extends the prefix of the one before (judges/panel.py)."""

import asyncio
import json

from judges.material import Candidate
from judges.panel import JudgePanel
from longform.config import JudgesConfig
from longform.engine import Endpoint

from conftest import make_engine
from fault_server import FaultServer, ok

RATINGS = {d: 3 for d in ("relevance", "accuracy", "coherence", "clarity", "breadth_and_depth", "reading_experience")}


def _judge(body):
    return ok(json.dumps(RATINGS)) if "response_format" in body else ok("A")


def _shared(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def test_a_prompts_judgments_follow_each_other_by_the_candidate_shown_first(store):
    cfg = JudgesConfig(rubric=True, pairwise=True, verdicts="text")
    texts = {k: f"Answer {k}. " + " ".join([f"w{k}"] * 200) for k in "ABC"}
    candidates = [Candidate(f"s{k}", "p", "Write about tea.", texts[k]) for k in "ABC"]
    with FaultServer() as server:
        server.answer = _judge
        engine = make_engine(Endpoint(server.base_url, "fault-model", "json_schema", 8192), store, concurrency=1)
        rows = []
        panel = JudgePanel(engine, cfg, context_window=8192, run_id="r", record=rows.append)
        panel.expect("p", 3)

        async def go():
            try:
                for k, c in enumerate(candidates):
                    await panel.sample_done("p", (k,), c)
            finally:
                await engine.close()
        asyncio.run(go())
        sent = [r["messages"][0]["content"] for r in server.received]
    kinds = [("rubric" if "Rate how well" in s else "pair") for s in sent]
    firsts = [next(k for k in "ABC" if s.find(f"Answer {k}.") == min(s.find(f"Answer {x}.") for x in "ABC"
                                                                    if f"Answer {x}." in s)) for s in sent]
    # Nothing is judged before the prompt's last candidate; then A's group, B's, C's.
    assert len(sent) == 3 + 6 and len(rows) == 9
    assert list(zip(kinds, firsts)) == [("rubric", "A"), ("pair", "A"), ("pair", "A"),
                                        ("rubric", "B"), ("pair", "B"), ("pair", "B"),
                                        ("rubric", "C"), ("pair", "C"), ("pair", "C")]
    # Within a group every request repeats the one before up to the end of response A.
    for group in (sent[0:3], sent[3:6], sent[6:9]):
        first_text = next(t for t in texts.values() if t in group[0])
        through_a = group[0].index(first_text) + len(first_text)
        assert all(_shared(group[0], other) >= through_a for other in group[1:])


def test_without_a_known_count_each_sample_is_rated_as_it_finishes(store):
    cfg = JudgesConfig(rubric=True, pairwise=True, verdicts="text")
    with FaultServer() as server:
        server.answer = _judge
        engine = make_engine(Endpoint(server.base_url, "fault-model", "json_schema", 8192), store, concurrency=1)
        rows = []
        panel = JudgePanel(engine, cfg, context_window=8192, run_id="r", record=rows.append)

        async def go():
            try:
                await panel.sample_done("p", (0,), Candidate("s0", "p", "x", "one answer"))
                after_first = len(server.received)
                await panel.sample_done("p", (1,), Candidate("s1", "p", "x", "another answer"))
                await panel.judge_remaining()
                return after_first
            finally:
                await engine.close()
        after_first = asyncio.run(go())
    assert after_first == 1 and len(rows) == 4   # two rubrics, then the pair in both orders
