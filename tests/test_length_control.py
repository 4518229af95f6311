"""Length control recovers an injected length bias on synthetic annotations with a known truth."""

import math

import numpy as np
from scipy.stats import spearmanr

from judges.length_control import Rated, Verdict, fit_pairwise, fit_rubric


def _sigmoid(z):
    return 1 / (1 + math.exp(-z))


def test_pairwise_fit_recovers_length_bias_and_true_group_order():
    rng = np.random.default_rng(7)
    theta = {"terse": 1.0, "medium": 0.5, "verbose": 0.0}       # truth: terse is best
    mean_words = {"terse": 1000, "medium": 2000, "verbose": 3000}  # ...but writes least
    phi_true, position = 2.0, 0.3
    pairs = []
    for k in range(900):
        g1, g2 = rng.choice(list(theta), size=2, replace=False)
        w1, w2 = (max(50, int(rng.normal(mean_words[g], 300))) for g in (g1, g2))
        pairs.append((f"s{k}a", g1, w1, f"s{k}b", g2, w2))
    sigma = float(np.std([s * (p[2] - p[5]) for p in pairs for s in (1, -1)]))
    verdicts = []
    for a, ga, wa, b, gb, wb in pairs:
        for first, gf, wf, second, gs, ws in ((a, ga, wa, b, gb, wb), (b, gb, wb, a, ga, wa)):
            p = _sigmoid(position + theta[gf] - theta[gs] + phi_true * math.tanh((wf - ws) / sigma))
            verdicts.append(Verdict(first, second, wf, ws, gf, gs, "A" if rng.random() < p else "B"))

    fit, per_sample = fit_pairwise(verdicts)

    assert fit.status == "fitted"
    assert fit.ci_low <= phi_true <= fit.ci_high
    assert fit.ci_low > 0.5                                       # a bias is found, not just allowed
    groups = fit.detail["groups"]
    lc_order = sorted(groups, key=lambda g: -groups[g]["lc_win_rate"])
    raw_order = sorted(groups, key=lambda g: -groups[g]["raw_win_rate"])
    assert lc_order == ["terse", "medium", "verbose"]
    assert raw_order != lc_order                                  # the raw ranking is fooled by length
    pos = fit.detail["position"]["ci"]
    assert pos[0] <= position <= pos[1]
    some = next(iter(per_sample.values()))
    assert set(some) == {"pairwise_logit", "lc_pairwise_logit"}


def test_instruction_terms_absorb_instruction_specific_preferences():
    rng = np.random.default_rng(5)
    # Two writers, equal on average, but "b" is far better on instruction x0 and worse elsewhere.
    verdicts = []
    for x in range(6):
        edge = 2.0 if x == 0 else -0.4
        for k in range(120):
            wa, wb = int(rng.normal(1500, 300)), int(rng.normal(1500, 300))
            for first, second, wf, ws, gf, gs, sign in ((f"a{x}-{k}", f"b{x}-{k}", wa, wb, "a", "b", 1),
                                                        (f"b{x}-{k}", f"a{x}-{k}", wb, wa, "b", "a", -1)):
                p = _sigmoid(-sign * edge + 0.8 * math.tanh((wf - ws) / 424))
                verdicts.append(Verdict(first, second, wf, ws, gf, gs, "A" if rng.random() < p else "B", f"x{x}"))
    plain, _ = fit_pairwise(verdicts)
    rich, _ = fit_pairwise(verdicts, instruction_min=50)
    assert plain.status == rich.status == "fitted"
    assert rich.detail["instruction_terms"] == [f"x{x}" for x in range(6)]
    assert rich.ci_low <= 0.8 <= rich.ci_high
    assert abs(rich.detail["groups"]["b"]["theta"]) < 0.3             # equal on average over instructions
    # The per-instruction view predicts better than one offset per writer.
    assert rich.detail["groups"]["b"]["lc_win_rate"] != plain.detail["groups"]["b"]["lc_win_rate"]


def test_rubric_fit_recovers_length_bias_and_true_sample_order():
    rng = np.random.default_rng(11)
    phi_true = 25.0
    rated, truth = [], {}
    log_words = rng.normal(math.log(1500), 0.5, size=300)
    mean, sd = log_words.mean(), log_words.std()
    for i, lw in enumerate(log_words):
        words = int(math.exp(lw))
        z = (lw - mean) / sd
        # Quality is independent of length (the assumption under any length control: a length
        # term cannot tell a judge's bias from a real length-quality relation), but the judge's
        # length bias varies more than quality does, so it decides the raw ranking.
        true_quality = 60 + rng.normal(0, 5)
        observed = true_quality + phi_true * math.tanh(z) + rng.normal(0, 2)
        sample = f"s{i}"
        truth[sample] = true_quality
        rated.append(Rated(sample, f"p{i // 3}", observed, words, 1500))

    fit, lc = fit_rubric(rated)

    assert fit.status == "fitted"
    assert fit.ci_low <= phi_true <= fit.ci_high
    ids = [r.sample_id for r in rated]
    true_q = [truth[s] for s in ids]
    raw_rho = spearmanr(true_q, [r.quality for r in rated]).statistic
    lc_rho = spearmanr(true_q, [lc[s] for s in ids]).statistic
    assert raw_rho < 0.3
    assert lc_rho > 0.9


def test_too_little_data_is_reported_not_fitted():
    fit, lc = fit_rubric([Rated("a", "p", 50, 100, 100), Rated("b", "p", 60, 200, 100)])
    assert fit.status == "not_identified" and "need at least 4" in fit.reason and lc == {}
    always_a = [Verdict(f"a{i}", f"b{i}", 100 * i, 100, "w", "w", "A") for i in range(6)]
    fit, _ = fit_pairwise(always_a)
    assert fit.status == "not_identified" and "always picked the same position" in fit.reason
    same = [Verdict(f"a{i}", f"b{i}", 100, 100, "w", "w", "AB"[i % 2]) for i in range(6)]
    fit, _ = fit_pairwise(same)
    assert fit.status == "not_identified" and "same length difference" in fit.reason
