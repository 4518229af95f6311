"""Length-controlled judging, after Length-Controlled AlpacaEval (Dubois et al., 2024).

LLM judges prefer longer answers. We estimate how much, and take it out.

Pairwise verdicts. A logistic GLM over every verdict, both orders, on the judge's probability that
the first answer is better where its logprobs give one (a binomial GLM with fractional responses,
as LC-AlpacaEval weights its preferences), else on the argmax (1, 0, or ½ for a tie):

    logit P(first ≻ second) = β_pos + (θ_g(first) − θ_g(second)) + φ · tanh(Δlen / σ)

g is the thing whose quality is compared (writer or generator model; AlpacaEval's per-model θ —
a per-candidate θ is not identified when each candidate meets one other), Δlen the difference in
words and σ its standard deviation. β_pos is position bias, identified because every pair is asked
in both orders; AlpacaEval has no such term because it randomises the order instead. The
per-instruction difficulty term is left out: on a custom prompt set it is not identified (alpaca_eval
issue #316). A group's length-controlled win rate is its mean predicted win probability over the
cross-group comparisons it took part in, with Δlen = 0 and no position.
A candidate's length-controlled logit is its observed logit against the other candidate (both orders
pooled, add-½ smoothed) minus the fitted length term.

Rubric scores. OLS of S_q (its expectation under the rating tokens' probabilities where the judge
gave them, else the argmax) on f(len) = tanh of the standardised log length, plus a fixed effect per
prompt where prompts have several candidates:

    LC score = S_q − φ_s · (f(len) − f(required length))

i.e. the judge's score had the answer been exactly as long as asked.

φ and φ_s are stored with 95% confidence intervals for each judge and run: how length-biased a
judge is, is a number you can query. A fit that the data cannot identify says so, with the reason,
instead of returning a number.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LengthFit:
    kind: str                       # pairwise | rubric
    status: str                     # fitted | not_identified
    n: int
    reason: str | None = None
    phi: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    scale: float | None = None      # σ of Δlen (pairwise) or sd of log length (rubric)
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    first: str                      # sample ids, in the order shown
    second: str
    first_words: int
    second_words: int
    first_group: str
    second_group: str
    winner: str | None              # A | B | tie (the argmax); None when only p_first was read
    prompt_id: str = ""
    p_first: float | None = None    # P(first ≻ second) from the verdict token's logprobs

    @property
    def preference(self) -> float:
        """The response: P(first ≻ second), graded where the judge's logprobs gave it."""
        if self.p_first is not None:
            return self.p_first
        return {"A": 1.0, "B": 0.0, "tie": 0.5}[self.winner]


@dataclass(frozen=True)
class Rated:
    sample_id: str
    prompt_id: str
    quality: float
    words: int
    required_words: int


# --- pairwise ------------------------------------------------------------------------------------

def fit_pairwise(verdicts: list[Verdict], *, instruction_min: int | None = None
                 ) -> tuple[LengthFit, dict[str, dict[str, float]]]:
    """The fit, and per sample its raw and length-controlled logit against its pair partners.

    `instruction_min`: give each instruction with at least this many cross-group verdicts its own
    group offsets δ_x,g (AlpacaEval's instruction term, linearised: its rank-one (ψ_g − ψ_h)·γ_x
    becomes a free offset per instruction and group). Off by default: it needs many verdicts per
    instruction to be identified.
    """
    n = len(verdicts)
    if n < 4:
        return LengthFit("pairwise", "not_identified", n, f"{n} usable verdicts; need at least 4"), {}
    y = np.array([v.preference for v in verdicts])
    if np.ptp(y) < 1e-9:
        graded = any(v.p_first is not None for v in verdicts)
        why = (f"every preference is {y[0]:.3f}" if graded else
               f"every verdict is {verdicts[0].winner!r}: the judge always picked the same position;"
               " graded verdicts ([judges] verdicts = \"logprobs\") would give it a signal")
        return LengthFit("pairwise", "not_identified", n, f"{why}: nothing to fit"), {}
    delta = np.array([v.first_words - v.second_words for v in verdicts], dtype=float)
    sigma = float(np.std(delta))
    if sigma == 0:
        return LengthFit("pairwise", "not_identified", n, "every pair has the same length difference"), {}
    groups = sorted({v.first_group for v in verdicts} | {v.second_group for v in verdicts})
    compared = groups[1:]  # the first group is the reference, θ = 0
    columns = {"position": np.ones(n), "length": np.tanh(delta / sigma)}
    for g in compared:
        columns[f"theta[{g}]"] = np.array([(v.first_group == g) - (v.second_group == g) for v in verdicts], float)
    instructions = _rich_instructions(verdicts, instruction_min) if instruction_min and compared else []
    covered = set(instructions) >= {v.prompt_id for v in verdicts if v.first_group != v.second_group}
    # When every cross-group verdict has an instruction term, they are effects-coded against the last
    # instruction (δ sums to zero over instructions), so θ stays the group's average quality.
    coded = instructions[:-1] if covered else instructions
    for x in coded:
        for g in compared:
            columns[f"delta[{x}|{g}]"] = np.array(
                [((v.prompt_id == x) - (covered and v.prompt_id == instructions[-1]))
                 * ((v.first_group == g) - (v.second_group == g)) for v in verdicts], float)
    fitted = _glm(y, columns)
    if isinstance(fitted, str):
        return LengthFit("pairwise", "not_identified", n, fitted, scale=sigma), {}
    params, ci = fitted
    phi = params["length"]
    theta = {groups[0]: 0.0, **{g: params[f"theta[{g}]"] for g in compared}}

    def strength(v: Verdict, g: str) -> float:
        if covered and instructions and v.prompt_id == instructions[-1]:
            return theta[g] - sum(params.get(f"delta[{x}|{g}]", 0.0) for x in coded)
        return theta[g] + params.get(f"delta[{v.prompt_id}|{g}]", 0.0)

    detail = {
        "position": {"estimate": params["position"], "ci": list(ci["position"]),
                     "mean_p_first": float(np.mean(y)), "pair_bias": _position_bias(verdicts)},
        "graded": sum(v.p_first is not None for v in verdicts),
        "longer_wins": _longer_wins(verdicts, phi, sigma, params["position"]),
        "groups": _group_rates(verdicts, theta, strength) if len(groups) > 1 else {},
        "instruction_terms": instructions,
    }
    fit = LengthFit("pairwise", "fitted", n, phi=phi, ci_low=ci["length"][0], ci_high=ci["length"][1],
                    scale=sigma, detail=detail)
    return fit, _sample_logits(verdicts, phi, sigma)


def _position_bias(verdicts: list[Verdict]) -> float | None:
    """How much the judge favours whatever is shown first, averaged over pairs asked in both orders:
    mean of (P(first | A,B) + P(first | B,A)) / 2 − ½ (0: none; ½: it always picks the first)."""
    by_pair: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for v in verdicts:
        by_pair[tuple(sorted((v.first, v.second)))][v.first] = v.preference
    both = [sum(orders.values()) / 2 - 0.5 for orders in by_pair.values() if len(orders) == 2]
    return float(np.mean(both)) if both else None


def _longer_wins(verdicts: list[Verdict], phi: float, sigma: float, position: float) -> dict[str, float] | None:
    """How often the longer answer of a pair wins: as the judge said (position-debiased), and with
    the fitted length term taken out (the model's win probability at Δlen = 0 plus the residual)."""
    raw, lc = [], []
    for v in verdicts:
        if v.first_words == v.second_words:
            continue
        length = phi * math.tanh((v.first_words - v.second_words) / sigma)
        p = min(max(v.preference, 1e-6), 1 - 1e-6)
        controlled = _sigmoid(math.log(p / (1 - p)) - length)
        first_longer = v.first_words > v.second_words
        raw.append(p if first_longer else 1 - p)
        lc.append(controlled if first_longer else 1 - controlled)
    if not raw:
        return None
    return {"raw": float(np.mean(raw)), "lc": float(np.mean(lc)), "pairs": len(raw)}


def sample_preferences(verdicts: list[Verdict]) -> dict[str, float]:
    """Each candidate's mean position-debiased preference over the pairs it was in (both orders
    asked): a judge signal that needs no fit, stored whether or not φ is identified."""
    mine: dict[str, list[float]] = defaultdict(list)
    for (a, b), p in debiased_preferences(verdicts).items():
        mine[a].append(p)
        mine[b].append(1 - p)
    return {s: float(np.mean(ps)) for s, ps in mine.items()}


def debiased_preferences(verdicts: list[Verdict]) -> dict[tuple[str, str], float]:
    """Per pair (a, b) asked in both orders: (P(a first ≻ b) + 1 − P(b first ≻ a)) / 2, the judge's
    preference for a with its position bias cancelled."""
    by_pair: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for v in verdicts:
        by_pair[tuple(sorted((v.first, v.second)))][v.first] = v.preference
    return {(a, b): (orders[a] + 1 - orders[b]) / 2 for (a, b), orders in by_pair.items() if len(orders) == 2}


def _rich_instructions(verdicts: list[Verdict], least: int) -> list[str]:
    counts = Counter(v.prompt_id for v in verdicts if v.first_group != v.second_group)
    return sorted(x for x, n in counts.items() if n >= least)


def _group_rates(verdicts: list[Verdict], theta: dict[str, float], strength) -> dict[str, dict[str, float]]:
    lc, raw = defaultdict(list), defaultdict(list)
    for v in verdicts:
        if v.first_group == v.second_group:
            continue
        won = v.preference
        for me, other, score in ((v.first_group, v.second_group, won), (v.second_group, v.first_group, 1 - won)):
            lc[me].append(_sigmoid(strength(v, me) - strength(v, other)))
            raw[me].append(score)
    return {g: {"theta": theta[g], "lc_win_rate": float(np.mean(lc[g])), "raw_win_rate": float(np.mean(raw[g])),
                "comparisons": len(raw[g])} for g in theta if raw[g]}


def _sample_logits(verdicts: list[Verdict], phi: float, sigma: float) -> dict[str, dict[str, float]]:
    pairs: dict[tuple[str, str], list[float]] = defaultdict(list)
    words: dict[str, int] = {}
    for v in verdicts:
        a, b = sorted((v.first, v.second))
        won = v.preference
        pairs[(a, b)].append(won if v.first == a else 1 - won)
        words[v.first], words[v.second] = v.first_words, v.second_words
    raw, lc = defaultdict(list), defaultdict(list)
    for (a, b), wins in pairs.items():
        p = (sum(wins) + 0.5) / (len(wins) + 1)
        observed = math.log(p / (1 - p))
        controlled = observed - phi * math.tanh((words[a] - words[b]) / sigma)
        raw[a].append(observed), lc[a].append(controlled)
        raw[b].append(-observed), lc[b].append(-controlled)
    return {s: {"pairwise_logit": float(np.mean(raw[s])), "lc_pairwise_logit": float(np.mean(lc[s]))} for s in raw}


# --- rubric --------------------------------------------------------------------------------------

def fit_rubric(rated: list[Rated]) -> tuple[LengthFit, dict[str, float]]:
    """The fit, and per sample its length-controlled S_q."""
    n = len(rated)
    if n < 4:
        return LengthFit("rubric", "not_identified", n, f"{n} scored samples; need at least 4"), {}
    log_len = np.log([max(r.words, 1) for r in rated])
    mean, sd = float(log_len.mean()), float(log_len.std())
    if sd == 0:
        return LengthFit("rubric", "not_identified", n, "every sample has the same length"), {}
    if np.ptp([r.quality for r in rated]) < 1e-9:
        return LengthFit("rubric", "not_identified", n,
                         f"every sample got the same score ({rated[0].quality:.2f}): nothing to fit;"
                         " graded scores ([judges] verdicts = \"logprobs\") would give it a signal"), {}

    def f(words: np.ndarray | float) -> np.ndarray:
        return np.tanh((np.log(np.maximum(words, 1)) - mean) / sd)

    y = np.array([r.quality for r in rated])
    columns = {"length": f(np.array([r.words for r in rated], float))}
    prompts = sorted({r.prompt_id for r in rated})
    # Prompt effects only where a prompt has several candidates: with one each they absorb
    # every observation and leave nothing to estimate φ_s from.
    prompt_effects = n - len(prompts) >= 3
    if prompt_effects:
        for p in prompts:
            columns[f"prompt[{p}]"] = np.array([r.prompt_id == p for r in rated], float)
    else:
        columns["intercept"] = np.ones(n)
    fitted = _ols(y, columns)
    if isinstance(fitted, str):
        return LengthFit("rubric", "not_identified", n, fitted, scale=sd), {}
    params, ci = fitted
    phi = params["length"]
    lc = {r.sample_id: float(r.quality - phi * (f(r.words) - f(r.required_words))) for r in rated}
    fit = LengthFit("rubric", "fitted", n, phi=phi, ci_low=ci["length"][0], ci_high=ci["length"][1], scale=sd,
                    detail={"prompt_effects": prompt_effects, "mean_log_words": mean})
    return fit, lc


# --- fitting -------------------------------------------------------------------------------------

def _statsmodels():
    # Imported when a fit runs, not with the module: statsmodels.api takes 1.5 s to import here, and
    # every `longform` command that only passes through this module (status, a shard, a build
    # without judges) would pay it.
    import statsmodels.api as sm

    return sm


def _glm(y: np.ndarray, columns: dict[str, np.ndarray]):
    sm = _statsmodels()
    names, x = _design(columns)
    if np.linalg.matrix_rank(x) < x.shape[1]:
        return "the design is rank-deficient (a group or the length term is confounded with another term)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = sm.GLM(y, x, family=sm.families.Binomial()).fit()
        except Exception as e:  # statsmodels raises several unrelated types on separation
            return f"logistic fit failed: {e}"
    return _estimates(result, names)


def _ols(y: np.ndarray, columns: dict[str, np.ndarray]):
    names, x = _design(columns)
    if np.linalg.matrix_rank(x) < x.shape[1]:
        return "the design is rank-deficient (length is confounded with the prompt effects)"
    if len(y) - x.shape[1] < 2:
        return f"{len(y)} samples for {x.shape[1]} parameters; too few to estimate the length term"
    return _estimates(_statsmodels().OLS(y, x).fit(), names)


def _design(columns: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    names = list(columns)
    return names, np.column_stack([columns[c] for c in names])


def _estimates(result, names: list[str]):
    params = dict(zip(names, map(float, result.params)))
    ci = {name: (float(lo), float(hi)) for name, (lo, hi) in zip(names, np.asarray(result.conf_int()))}
    if not all(math.isfinite(v) for v in params.values()) or not all(map(math.isfinite, ci["length"])):
        return "the fit did not converge to finite estimates (e.g. one side always wins)"
    if not ci["length"][1] - ci["length"][0] > 1e-9:
        return "the length term's interval has zero width: the response does not vary with anything fitted"
    if ci["length"][1] - ci["length"][0] > 1e3:
        return "the length term is not identified (its confidence interval is unbounded; complete separation?)"
    return params, ci


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))
