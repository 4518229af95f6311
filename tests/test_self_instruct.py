"""Self-instruct seeds: candidates from few-shot prompts, kept only if long-form, 4-499 words and new."""

import asyncio

from flows.build import build

from longform.config import InstructionsConfig
from longform.prompts import Prompt
from writers.self_instruct import SelfInstruct, clean

from conftest import make_engine
from fault_server import FaultServer, ok, writer_answer
from helpers import remote_build, rows

SEEDS = [Prompt(f"seed{i}", text, None, {}) for i, text in enumerate([
    "Write a 3000-word history of the bicycle, from the draisine to carbon frames.",
    "Write a 2500-word guide to keeping bees in a city garden.",
    "Write a 4000-word short story about a lighthouse keeper during a winter storm.",
    "Write a 3000-word report on how small towns can reduce food waste.",
])]


def test_clean_takes_the_instruction_out_of_the_reply():
    assert clean('1. "Write a 3000-word essay on rivers."\nThanks!') == "Write a 3000-word essay on rivers."
    assert clean("\n\nInstruction: Write a long guide to tea.") == "Write a long guide to tea."
    assert clean("Here is the alternative writing:\nWrite a 3000-word guide to kites.") == \
        "Write a 3000-word guide to kites."
    assert clean("") == ""


def test_expansion_stores_every_candidate_and_keeps_only_new_long_form_instructions(embedded, store):
    cfg = InstructionsConfig(enabled=True, n=2, max_attempts=3, shots=2)
    known = ["Write a 2500-word guide to keeping bees in a city garden!"]  # a near-copy of a seed

    def run():
        engine = make_engine(embedded, store, concurrency=1)

        async def go():
            try:
                await engine.check()
                return await SelfInstruct(engine, cfg, seed=0).expand(SEEDS, known, "r-test"), engine
            finally:
                await engine.close()
        return asyncio.run(go())

    (kept, rows), engine = run()
    assert 1 <= len(rows) <= 3 and len(kept) == sum(r["accepted"] for r in rows) <= 2
    for row in rows:
        assert row["reason"] and (row["reason"] == "kept") == row["accepted"]
        if row["accepted"]:
            assert 4 <= len(row["instruction"].split()) <= 499
            assert row["instruction"] not in [s.instruction for s in SEEDS]
    assert all(p.meta == {"source": "self_instruct"} for p in kept)
    sent = engine.totals().requests

    (again, rows_again), engine = run()
    assert engine.totals().requests == 0 and sent > 0       # the same seed walks the same candidates
    assert [p.instruction for p in again] == [p.instruction for p in kept]


NEW = "Write a 3000-word guide to building a wooden canoe by hand."


def _stand_in(body):
    """A deterministic self-instruct model: one new instruction, a near-copy of a seed, then "yes"
    to every check; the writer's requests as the realistic stand-in answers them."""
    content = body["messages"][0]["content"]
    if "Write one new instruction" in content:
        return ok(NEW if body.get("seed", 0) % 2 == 0 else "Write about topic 1.")
    if "Would a good answer" in content:
        return ok('{"answer": "yes"}')
    return writer_answer(body)


def test_the_build_stage_registers_kept_instructions_and_stores_every_candidate(prefect, tmp_path):
    with FaultServer() as server:
        server.answer = _stand_in
        config = remote_build(tmp_path, server.base_url, 2, extra="")
        config.write_text(config.read_text() + "\n[instructions]\nenabled = true\nn = 1\nmax_attempts = 3\n")
        summary = asyncio.run(build(config=str(config)))
    db = tmp_path / "corpus.duckdb"
    candidates = rows(db, "select instruction, accepted, reason from instruction_candidates order by attempt")
    assert all(reason for *_, reason in candidates)
    assert [(text, accepted) for text, accepted, _ in candidates if accepted] == [(NEW, True)]
    registered = rows(db, "select prompt_id, instruction from prompts where source like 'self_instruct%'")
    assert [text for _, text in registered] == [NEW]
    # The kept instruction is written like the seeds.
    assert rows(db, "select count(*) from samples where prompt_id = ?", [registered[0][0]]) == [(1,)]
    assert summary["samples"] == 3
