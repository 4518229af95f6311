"""Self-Lengthen: its splitting and keeping rules, noise, and real rounds on the embedded model."""

import asyncio
import json
from pathlib import Path

import pytest
from datasets import load_dataset

from flows.build import build
from judges.filters import SELF_LENGTHEN_FILTERS
from longform.engine import Endpoint
from longform.config import GenerationConfig, SelfLengthenConfig
from longform.prompts import Prompt
from writers.self_lengthen import SelfLengthen, keep_two_thirds, noised, split_first_half, training_rows

from conftest import make_engine
from fault_server import FaultServer, ok
from helpers import rows, tiny_build


def test_first_half_and_two_thirds_are_counted_in_paragraphs():
    five = "\n\n".join(f"P{i}." for i in range(1, 6))
    assert split_first_half(five) == "P1.\n\nP2.\n\nP3."          # ceil(5 / 2)
    assert split_first_half("Only one.") == "Only one."
    assert keep_two_thirds(five) == "P1.\n\nP2.\n\nP3.\n\nP4."    # ceil(5 × 2/3)
    assert keep_two_thirds("A.\n\nB.") == "A.\n\nB."
    assert keep_two_thirds("One.") == "One."


def test_noise_keeps_about_four_lines_in_five_deterministically():
    text = "\n".join(f"line {i}" for i in range(1000))
    kept = noised(text, 0.8, seed=1).splitlines()
    assert 740 < len(kept) < 860 and kept == noised(text, 0.8, seed=1).splitlines()
    assert kept != noised(text, 0.8, seed=2).splitlines()
    assert all(line in text.splitlines() for line in kept)
    data = training_rows([("Write.", "a\nb\nc", "a longer answer")], keep=0.8, seed=0)
    assert data.generator[0]["messages"] == [{"role": "user", "content": "Write."},
                                             {"role": "assistant", "content": "a longer answer"}]
    assert "Write." in data.extender[0]["messages"][0]["content"]


def _scripted(store, cfg, *answers):
    """One sample through a stand-in server that answers `answers` in order: (writer result, bodies sent)."""
    with FaultServer() as server:
        server.push(*answers)
        engine = make_engine(Endpoint(server.base_url, "fault-model", "json_schema", 8192), store, concurrency=1)
        writer = SelfLengthen(engine, cfg, GenerationConfig(), seed=0, checks=SELF_LENGTHEN_FILTERS)

        async def go():
            try:
                return await writer.write(Prompt("p", "Write about tea.", 60), 0)
            finally:
                await engine.close()
        return asyncio.run(go()), server.received


ROUND = SelfLengthenConfig(rounds=1, min_growth=1.2, generator_max_tokens=60, round_max_tokens=200)


def test_a_truncated_generator_is_continued_and_a_round_failing_a_required_filter_is_rejected(store):
    result, sent = _scripted(
        store, ROUND,
        ok("Tea came from China.\n\nIt spread along trade routes and", finish_reason="length"),
        ok("into Europe, where it became a daily ritual in many homes."),
        ok("Tea came from China, where people first brewed leaves."),
        ok("and the rest goes on without any final punctuation mark"))
    steps = {s.role: s for s in result.steps}
    assert [s.role for s in result.steps] == ["generator", "continuation", "extender"]
    # The continuation asked the server to go on from the generator's own text.
    assert sent[1]["messages"][-1] == {"role": "assistant", "content": steps["generator"].text}
    assert steps["continuation"].accepted and steps["continuation"].text.endswith("many homes.")
    extender = steps["extender"]
    assert not extender.accepted and extender.reason.startswith("ends_with_punctuation:")
    assert result.text == steps["continuation"].text            # the rejected round is not the answer


def test_a_chain_that_does_not_grow_enough_is_a_failure_with_its_steps(store):
    result, _ = _scripted(store, ROUND, ok("Tea came from China and spread to the world."),
                          ok("Tea came from China."), ok("It spread."))
    assert (result.stage, result.reason) == ("self_lengthen", "insufficient_growth")
    assert "needs > 1.2×" in result.detail
    assert [r["role"] for r in result.extra["lengthen_steps"]] == ["generator", "extender"]


@pytest.mark.slow
def test_one_real_extension_round(embedded, store):
    engine = make_engine(embedded, store, concurrency=1)
    cfg = SelfLengthenConfig(rounds=1, min_growth=1.0, generator_max_tokens=60, round_max_tokens=200,
                             required_filters=[])
    writer = SelfLengthen(engine, cfg, GenerationConfig(), seed=0, checks=SELF_LENGTHEN_FILTERS)
    prompt = Prompt("p", "Write three short paragraphs about autumn in a small town.", 80, {})

    async def go():
        try:
            await engine.check()
            return await writer.write(prompt, 0)
        finally:
            await engine.close()

    result = asyncio.run(go())
    steps = result.extra_rows()["lengthen_steps"]
    roles = [s["role"] for s in steps]
    assert roles[0] == "generator" and roles[-1] == "extender"
    ext = steps[-1]
    parent = next(s for s in steps if s["step_id"] == ext["parent_step_id"])
    assert ext["words_before"] == parent["words_after"]
    assert ext["accepted"] == (ext["words_after"] > ext["words_before"])
    store.flush()
    sent = [store.request_document(r[0]) for r in store.query("select request_id from requests where stage = 'sl_extend_1'")[1]]
    # The extender continued its own enriched text: a completions request ending in that prefix.
    assert len(sent) == 1 and "prompt" in sent[0]
    prefix = sent[0]["prompt"].split("<|im_start|>assistant\n")[-1]
    assert prefix.strip() and ext["text"].startswith(prefix.strip())




@pytest.mark.slow
@pytest.mark.embedded
def test_a_self_lengthen_build_retrains_its_roles_stores_lineage_and_reruns_from_cache(prefect, tmp_path):
    config = tiny_build(tmp_path, name="sl")
    config.write_text(config.read_text().replace("[agentwrite]", """[writers]
enabled = ["self_lengthen"]

[self_lengthen]
rounds = 1
min_growth = 1.0
generator_max_tokens = 30
round_max_tokens = 70
required_filters = []
iterations = 2
train_max_steps = 1


[agentwrite]"""))
    db = tmp_path / "corpus.duckdb"
    summary = asyncio.run(build(config=str(config)))
    steps = rows(db, "select sample_id, role, round, accepted, words_before, words_after, parent_step_id, verdicts"
                      " from lengthen_steps order by sample_id, round, role")
    assert {r[1] for r in steps} >= {"generator", "extender"}
    assert all(json.loads(r[7]).keys() == {"ends_with_punctuation", "repeated_ngram", "meta_words"} for r in steps)
    for sample_id, role, round_, accepted, before, after, parent, _ in steps:
        if role == "extender":
            assert parent is not None and accepted == (after > before)
    # At least one extension round made an answer longer than the one it extended.
    assert any(role == "extender" and accepted and after > before for _, role, _, accepted, before, after, *_ in steps)
    kept = rows(db, "select sample_id from samples s where writer = 'self_lengthen' and exists"
                    " (select 1 from lengthen_steps l where l.sample_id = s.sample_id and l.iteration = 1)")
    written = rows(db, "select count(*) from (select sample_id from samples union all select sample_id from failures)")
    assert written == [(4,)]  # two prompts, two iterations
    # Documented in the README: growth per round.
    growth = rows(db, """select round, role, count(*) filter (where accepted) as accepted, count(*) as tried,
                          round(avg(words_after - words_before), 1) as growth
                          from lengthen_steps group by all order by round""")
    assert growth and growth[0][0] == 0
    iteration_1 = tmp_path / "out" / "sl" / "self_lengthen" / "iter_1"
    data = load_dataset("parquet", data_files=str(iteration_1 / "generator" / "sft" / "train.parquet"))["train"]
    assert len(data) == len(kept) > 0  # an accepted extension above keeps its sample (min_growth = 1)

    # Iteration 1's data retrained both roles (LoRA, TRL); iteration 2 asked the retrained roles.
    trained = rows(db, "select dataset, status, steps, coalesce(lora::varchar, 'null') <> 'null' from train_runs"
                        " order by dataset")
    assert [(Path(d).name, status, steps, lora) for d, status, steps, lora in trained] == [
        ("extender", "finished", 1, True), ("generator", "finished", 1, True)]
    served = dict(rows(db, "select stage, list(distinct model) from requests where run_id = ? group by stage",
                       [summary["run_id"]]))
    assert any(m.startswith("generator-iter1-") for m in served["sl_generate"])
    assert any(m.startswith("extender-iter1-") for stage, models in served.items() if stage.startswith("sl_e")
               for m in models)
    # Iteration 2 wrote every prompt again, through the retrained roles: a chain each, kept or failed
    # (the 135M model decides which; a deterministic server asserts the kept case in test_lora_serving.py).
    assert rows(db, "select count(distinct sample_id) from lengthen_steps where iteration = 2") == [(2,)]
    second = rows(db, "select s.model from samples s where exists (select 1 from lengthen_steps l"
                      " where l.sample_id = s.sample_id and l.iteration = 2)"
                      " union all select 'failed' from failures f where exists (select 1 from lengthen_steps l"
                      " where l.sample_id = f.sample_id and l.iteration = 2)")
    assert len(second) == 2 and all(m == "failed" or m.startswith("generator=generator-iter1-") for (m,) in second)

    again = asyncio.run(build(config=str(config)))
    assert again["requests_sent"] == 0 and summary["requests_sent"] > 0
    assert rows(db, "select count(*) from train_runs") == [(2,)]  # the adapters were reused, not retrained
