"""GATEAU's measures on the embedded model's own weights, on samples built to differ in one way."""

import numpy as np
import pytest

from judges.gateau import GateauScorer, Measured, Sample, combine
from longform.hf_model import load_causal_lm

FACTS = ("Captain Orla Vexmire commanded the freighter Quillon-7, which left Port Tesmar with 4,817 crates"
         " of saffron and a crew of nineteen.")
FILLER = ("The sea was calm for most of the morning. Gulls followed the wake, and the deck smelled of salt"
          " and rope. Work went on as it always did: ropes were checked, coffee was made, the engine hummed"
          " below, and the hours passed slowly under a pale sky.")
LATER_REUSES = ("By evening Orla Vexmire counted the cargo again: 4,817 crates of saffron, all dry. The Quillon-7"
                " would reach harbour by dawn, and Port Tesmar would hear that Captain Orla Vexmire had kept"
                " every one of the 4,817 crates safe aboard the Quillon-7.")
LATER_OWN = ("By evening the cook baked bread in the small galley oven. Flour dusted the table, the loaves rose"
             " slowly in the warmth, and the smell of fresh bread drifted across the deck while the sun went"
             " down behind a long line of grey clouds.")


@pytest.fixture(scope="module")
def scorer():
    model, tokenizer = load_causal_lm("embedded")
    return GateauScorer(model, tokenizer, window=48, max_segments=4, batch_size=4)


def test_hmg_is_higher_when_later_paragraphs_need_the_first(scorer):
    reuses = Sample("reuses", "Write a short story about a cargo ship.", (FACTS, FILLER, FILLER, LATER_REUSES))
    own = Sample("own", "Write a short story about a cargo ship.", (FACTS, FILLER, FILLER, LATER_OWN))
    a, b = scorer.measure(reuses), scorer.measure(own)
    # Without the first paragraph in view, the names and numbers are much harder to predict.
    assert a.hmg_raw > b.hmg_raw + 0.2, (a, b)
    assert a.log_ppl_long < a.log_ppl_short
    for m in (a, b):
        assert 0 <= m.cam <= 1 and m.segments == 2 and m.scored_tokens > 0
    assert scorer.cost.tokens["window"] > 0 and scorer.cost.tokens["cam_attention"] > 0


def test_one_paragraph_answers_are_cut_into_token_runs(scorer):
    enc = scorer.encode(Sample("one", "Describe the sea.", (FILLER + " " + FILLER,)))
    assert len(enc.segments) >= 1 and enc.later[0] > enc.segments[-1][0]
    assert enc.later[1] == len(enc.ids)


def test_combine_normalises_ranks_and_weights():
    measured = [Measured("x", 1.0, 3.0, 0.1, 2, 10), Measured("y", 1.0, 1.5, 0.9, 2, 10),
                Measured("z", 2.0, 2.1, 0.5, 2, 10)]
    scores = combine(measured, alpha=1.0)
    assert [scores[s]["gateau_rank"] for s in "xyz"] == [1, 2, 3]
    only_cam = combine(measured, alpha=0.0)
    assert [only_cam[s]["gateau_rank"] for s in "xyz"] == [3, 1, 2]
    assert all(np.isfinite(v) for s in scores.values() for v in s.values())
