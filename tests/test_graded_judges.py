"""Graded verdicts from logprobs (judges/verdicts.py): a stand-in judge over real HTTP with planted
length and position biases, and the embedded model asked in both orders."""

import asyncio
import math
import random
import re

import pytest

from judges.length_control import (Rated, Verdict, debiased_preferences, fit_pairwise, fit_rubric,
                                   sample_preferences)
from judges.material import Candidate
from judges.pairwise import PairwiseJudge
from judges.rubric import DIMENSIONS, RubricJudge
from judges.verdicts import expected_rating, first_token_preference, label_probabilities
from longform.config import JudgesConfig
from longform.engine import Endpoint

from conftest import make_engine
from fault_server import FaultServer, ok

PHI, POSITION = 1.2, 1.5   # planted: log-odds per unit of tanh(Δwords / σ), and for being shown first


def _sigmoid(z):
    return 1 / (1 + math.exp(-z))


def _candidates(n_prompts=12, seed=7):
    rng = random.Random(seed)
    out = []
    for p in range(n_prompts):
        for k in range(3):
            words = rng.randint(100, 1500)
            out.append(Candidate(f"s{p}-{k}", f"p{p}", f"Write about topic {p}.", " ".join(["word"] * words)))
    return out


def _planted_judge(sigma):
    """P(A) = σ(position + φ·tanh(Δ/σ)) with Δ = words(A) − words(B), as the top alternatives of one token."""
    def answer(body):
        content = body["messages"][0]["content"]
        a, b = (len(m.split()) for m in re.findall(r"<<<BEGIN RESPONSE [AB] \w+>>>\n(.*?)\n<<<END", content, re.DOTALL))
        p = _sigmoid(POSITION + PHI * math.tanh((a - b) / sigma))
        letter = "A" if p >= 0.5 else "B"
        return ok(letter, logprobs=[(letter, math.log(max(p, 1 - p)),
                                     {"A": math.log(p), "B": math.log(1 - p), "The": math.log(1e-4)})])
    return answer


def _judge_all(server, candidates, cfg):
    endpoint = Endpoint(server.base_url, "judge-model", "json_schema", 100_000)

    async def go(store):
        engine = make_engine(endpoint, store, concurrency=8)
        try:
            judge = PairwiseJudge(engine, cfg, context_window=100_000)
            by_prompt = {}
            for c in candidates:
                by_prompt.setdefault(c.prompt_id, []).append(c)
            pairs = [(a, b) for cs in by_prompt.values() for i, a in enumerate(cs) for b in cs[i + 1:]]
            rows = await asyncio.gather(*(judge.judge(a, b, "r") for a, b in pairs))
            return [row for both in rows for row in both]
        finally:
            await engine.close()
    return go


def _verdicts(rows, words, *, graded):
    return [Verdict(r["sample_id"], r["other_sample_id"], words[r["sample_id"]], words[r["other_sample_id"]],
                    "w", "w", r["winner"], r["prompt_id"], r["p_first"] if graded else None) for r in rows]


def test_graded_verdicts_recover_planted_length_and_position_bias_where_the_argmax_cannot(store):
    candidates = _candidates()
    words = {c.sample_id: c.words for c in candidates}
    deltas = [words[a.sample_id] - words[b.sample_id] for a in candidates for b in candidates
              if a.prompt_id == b.prompt_id and a is not b]
    sigma = float(__import__("numpy").std(deltas))
    with FaultServer(model="judge-model") as server:
        server.answer = _planted_judge(sigma)
        rows = asyncio.run(_judge_all(server, candidates, JudgesConfig(pairwise=True))(store))
        sent = server.received
    assert len(rows) == 2 * 12 * 3                                     # 3 pairs per prompt, both orders
    assert all(b["max_tokens"] == 1 and b["logprobs"] and b["top_logprobs"] == 20 for b in sent)
    assert all(r["signal"] == "logprobs" and 0 < r["p_first"] < 1 for r in rows)

    graded, _ = fit_pairwise(_verdicts(rows, words, graded=True))
    assert graded.status == "fitted", graded.reason
    assert graded.ci_low <= PHI <= graded.ci_high and graded.ci_high - graded.ci_low > 0
    position = graded.detail["position"]
    assert position["ci"][0] <= POSITION <= position["ci"][1]
    assert position["pair_bias"] > 0.2                                 # the judge favours the first answer

    # The same verdicts, argmax only: the judge nearly always says "A", and what is left cannot place φ.
    argmax, _ = fit_pairwise(_verdicts(rows, words, graded=False))
    assert argmax.status == "not_identified" or not argmax.ci_low <= PHI <= argmax.ci_high, argmax


def test_debiased_preference_cancels_a_constant_position_bias():
    verdicts = [Verdict("a", "b", 10, 10, "w", "w", "A", "p", 0.9), Verdict("b", "a", 10, 10, "w", "w", "A", "p", 0.7)]
    assert debiased_preferences(verdicts) == {("a", "b"): pytest.approx((0.9 + 1 - 0.7) / 2)}
    assert sample_preferences(verdicts) == {"a": pytest.approx(0.6), "b": pytest.approx(0.4)}
    assert sample_preferences(verdicts[:1]) == {}                      # one order alone is not debiased


def test_reading_labels_and_ratings_from_top_alternatives():
    probs = label_probabilities({" A": math.log(0.6), "B": math.log(0.2), "The": math.log(0.1)}, ("A", "B"))
    assert probs == {"A": pytest.approx(0.75), "B": pytest.approx(0.25)}
    only_a = label_probabilities({"A": math.log(0.8), "The": math.log(0.05)}, ("A", "B"))
    assert only_a["B"] == pytest.approx(0.05 / 0.85)                    # a missing label gets the floor
    assert expected_rating({"3": math.log(0.5), "4": math.log(0.5), "x": math.log(0.1)}) == pytest.approx(3.5)
    assert first_token_preference(None) == (None, "argmax: the server returned no logprobs")


def test_pairwise_falls_back_to_the_argmax_and_says_so(store):
    with FaultServer(model="judge-model") as server:
        server.fallback = ok("B")                                       # a server that sends no logprobs
        rows = asyncio.run(_judge_all(server, _candidates(1)[:2], JudgesConfig(pairwise=True))(store))
    assert [(r["winner"], r["p_first"]) for r in rows] == [("B", None), ("B", None)]
    assert all(r["signal"] == "argmax: the server returned no logprobs" for r in rows)


def test_rubric_scores_in_expectation_beside_the_argmax(store):
    text = "{" + ", ".join(f'"{d}": 3' for d in DIMENSIONS) + "}"
    logprobs = []
    for piece in re.split(r"(\d)", text):
        if piece.isdigit():
            logprobs.append((piece, math.log(0.5), {"3": math.log(0.5), "4": math.log(0.3), "2": math.log(0.2)}))
        elif piece:
            logprobs.append((piece, 0.0, {}))
    with FaultServer(model="judge-model") as server:
        server.fallback = ok(text, logprobs=logprobs)
        endpoint = Endpoint(server.base_url, "judge-model", "json_schema", 8192)

        async def go():
            engine = make_engine(endpoint, store)
            try:
                return await RubricJudge(engine, JudgesConfig(rubric=True), 8192).judge(
                    Candidate("s", "p", "Write.", "Some text."), "r")
            finally:
                await engine.close()
        row = asyncio.run(go())
    assert row["quality"] == 50.0                                         # argmax: 3 everywhere
    assert row["expected_quality"] == pytest.approx((3 * 0.5 + 4 * 0.3 + 2 * 0.2 - 1) * 25)
    assert row["signal"] == "logprobs" and row["scores"]["expected"]["clarity"] == pytest.approx(3.1)


def test_a_fit_without_variance_is_not_identified():
    same = [Rated(f"s{i}", f"p{i % 2}", 54.17, 100 + 50 * i, 500) for i in range(6)]
    fit, lc = fit_rubric(same)
    assert fit.status == "not_identified" and "same score (54.17)" in fit.reason and lc == {}
    few = [Verdict("a", "b", 1, 2, "w", "w", "A", "p", 0.6)] * 3
    assert "need at least 4" in fit_pairwise(few)[0].reason


def test_embedded_judge_asks_both_orders_and_stores_probabilities(embedded, store):
    a = Candidate("s-a", "p", "Write a sentence about the sea.", "The sea is wide and blue, and it moves all day.")
    b = Candidate("s-b", "p", "Write a sentence about the sea.", "Sea.")

    async def go():
        engine = make_engine(embedded, store)
        try:
            return await PairwiseJudge(engine, JudgesConfig(pairwise=True), embedded.context_window).judge(a, b, "r")
        finally:
            await engine.close()
    rows = asyncio.run(go())
    assert [(r["sample_id"], r["other_sample_id"]) for r in rows] == [("s-a", "s-b"), ("s-b", "s-a")]
    assert all(r["signal"] == "logprobs" and 0 <= r["p_first"] <= 1 for r in rows), rows
    verdicts = [Verdict(r["sample_id"], r["other_sample_id"], 0, 0, "w", "w", r["winner"], "p", r["p_first"])
                for r in rows]
    [(pair, preference)] = debiased_preferences(verdicts).items()
    assert pair == ("s-a", "s-b")
    assert preference == pytest.approx((rows[0]["p_first"] + 1 - rows[1]["p_first"]) / 2)
