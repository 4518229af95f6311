"""`longform report`: one run's lengths, judges, length bias, filters and selection, as Markdown
with PNG plots, written next to the run's export.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter, defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from judges.ruler import ruler_metrics  # noqa: E402

def write_report(data: dict, out_dir: Path) -> Path:
    """`data`: one run's rows as `CorpusReads.report` reads them (longform/store/browsing.py)."""
    run, samples, fits, checks, dpo, judged = (data[k] for k in ("run", "samples", "fits", "checks", "dpo", "judged"))
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = [p for p in (_lengths_plot(samples, out_dir), _length_score_plot(samples, out_dir),
                         _judge_plot(samples, fits, out_dir), _filters_plot(checks, out_dir)) if p]
    text = _markdown(run, samples, fits, checks, dpo, judged, plots)
    path = out_dir / "report.md"
    path.write_text(text, encoding="utf-8")
    return path


def _markdown(run, samples, fits, checks, dpo, judged, plots) -> str:
    lines = [f"# Report: run `{run['run_id']}` ({run['name']})", "",
             f"Status {run['status']} · started {run['started_at']} · finished {run['finished_at'] or '–'}", ""]
    by_writer = defaultdict(list)
    for s in samples:
        by_writer[s["writer"]].append(s)
    lines += ["## Lengths", "", "| writer | samples | median words | median S_l | selected |", "|---|---|---|---|---|"]
    for writer, group in sorted(by_writer.items()):
        lines.append(f"| {writer} | {len(group)} | {statistics.median(s['words'] for s in group):.0f} | "
                     f"{statistics.median(s['length_score'] for s in group):.1f} | "
                     f"{sum(bool(s['selected']) for s in group)} |")
    ruler = ruler_metrics([(s["required_words"], s["words"]) for s in samples])
    lines += ["", "Ruler's Precise / Flexible Match (lower bound exclusive); `band` is longform's extension:",
              "within ±10% (PM) and ±25% (FM) of any target.", "",
              "| target | n | PM | FM |", "|---|---|---|---|"]
    for label, r in ruler["targets"].items():
        lines.append(f"| {label} | {r['n']} | {_pct(r['PM'])} | {_pct(r['FM'])} |")
    for level, r in ruler["levels"].items():
        lines.append(f"| level {level} | {r['n']} | {_pct(r['PM'])} | {_pct(r['FM'])} |")
    lines.append(f"| all Ruler targets | {ruler['overall']['n']} | {_pct(ruler['overall']['PM'])} | "
                 f"{_pct(ruler['overall']['FM'])} |")
    lines.append(f"| band (any target) | {ruler['band']['n']} | {_pct(ruler['band']['PM'])} | "
                 f"{_pct(ruler['band']['FM'])} |")

    lines += ["", "## Judges", ""]
    if judged:
        lines += ["| judgment | parse status | count |", "|---|---|---|"]
        lines += [f"| {j['kind']} | {j['parse_status']} | {j['n']} |" for j in judged]
    else:
        lines.append("No judges ran ([judges] rubric / pairwise are off).")
    lines += ["", "### Length bias", "",
              "φ is the judge's preference for length (pairwise: per unit of tanh(Δwords/σ) on the logit; rubric:"
              " S_q points per unit of tanh of standardised log length), with its 95% confidence interval.", ""]
    lines += _judge_summary(fits)
    lines += ["| judge | kind | status | n | φ | 95% CI | note |", "|---|---|---|---|---|---|---|"]
    for f in fits:
        ci = f"[{f['ci_low']:.2f}, {f['ci_high']:.2f}]" if f["status"] == "fitted" else "–"
        phi = f"{f['phi']:.2f}" if f["phi"] is not None else "–"
        lines.append(f"| {f['judge_model']} | {f['kind']} | {f['status']} | {f['n']} | {phi} | {ci} | {f['reason'] or ''} |")
        detail = json.loads(f["detail"]) if isinstance(f["detail"], str) else (f["detail"] or {})
        for group, g in (detail.get("groups") or {}).items():
            lines.append(f"| | {group} | | {g['comparisons']} | θ {g['theta']:.2f} | | win rate raw "
                         f"{g['raw_win_rate']:.0%}, length-controlled {g['lc_win_rate']:.0%} |")

    failed = Counter(c["filter"] for c in checks if not c["passed"])
    total = Counter(c["filter"] for c in checks)
    lines += ["", "## Filters", "", "| filter | failed | checked |", "|---|---|---|"]
    lines += [f"| {name} | {failed[name]} | {total[name]} |" for name in sorted(total)]
    chosen = sum(bool(d["selected"]) for d in dpo)
    lines += ["", "## Selection", "",
              f"SFT: {sum(bool(s['selected']) for s in samples)} of {len(samples)} samples selected. "
              f"DPO: {chosen} pairs from {len(dpo)} prompts.", ""]
    reasons = Counter(reason_kind(d["reason"]) for d in dpo if not d["selected"])
    if reasons:
        lines += ["| DPO: no pair because | prompts |", "|---|---|"]
        lines += [f"| {reason} | {n} |" for reason, n in reasons.most_common()]
    lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    return "\n".join(lines)


def _judge_summary(fits) -> list[str]:
    """Per judge: verdicts (graded ones), position bias, φ and its interval, the longer answer's win
    rate as judged and length-controlled."""
    lines = []
    for f in fits:
        detail = json.loads(f["detail"]) if isinstance(f["detail"], str) else (f["detail"] or {})
        if f["kind"] != "pairwise" or f["status"] != "fitted":
            continue
        position, longer = detail.get("position") or {}, detail.get("longer_wins") or {}
        bias = position.get("pair_bias")
        lines.append(f"- **{f['judge_model']}**, pairwise: {f['n']} verdicts ({detail.get('graded', 0)} graded from"
                     f" logprobs); position bias {'–' if bias is None else f'{bias:+.2f}'} (P(first wins) − ½,"
                     f" both orders); φ {f['phi']:.2f} [{f['ci_low']:.2f}, {f['ci_high']:.2f}]"
                     + (f"; the longer answer wins {longer['raw']:.0%} as judged, {longer['lc']:.0%} length-controlled"
                        f" ({longer['pairs']} verdicts)" if longer else ""))
    return lines + ([""] if lines else [])


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _save(fig, ax, path: Path, *, x: str, title: str, y: str | None = None, legend: bool = False) -> Path:
    ax.set_xlabel(x)
    if y:
        ax.set_ylabel(y)
    ax.set_title(title)
    if legend:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _lengths_plot(samples, out_dir: Path) -> Path | None:
    if not samples:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    by_writer = defaultdict(list)
    for s in samples:
        by_writer[s["writer"]].append(s["words"])
    ax.hist(list(by_writer.values()), bins=20, label=list(by_writer), stacked=True)
    return _save(fig, ax, out_dir / "lengths.png", x="words (lbw_words)", y="samples", title="Length per writer",
                 legend=True)


def _length_score_plot(samples, out_dir: Path) -> Path | None:
    if not samples:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist([s["length_score"] for s in samples], bins=np.linspace(0, 100, 21))
    return _save(fig, ax, out_dir / "length_score.png", x="length score S_l", y="samples",
                 title="LongBench-Write length score")


def _judge_plot(samples, fits, out_dir: Path) -> Path | None:
    rated = [s for s in samples if s["quality"] is not None]
    if not rated:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    words = np.array([s["words"] for s in rated], float)
    quality = np.array([s["quality"] for s in rated])
    ax.scatter(words, quality, s=14, label="judge S_q")
    fit = next((f for f in fits if f["kind"] == "rubric" and f["status"] == "fitted"), None)
    if fit:
        detail = json.loads(fit["detail"]) if isinstance(fit["detail"], str) else fit["detail"]
        mean, sd = detail["mean_log_words"], fit["scale"]
        grid = np.linspace(max(words.min(), 1), words.max(), 100)

        def f(w):
            return np.tanh((np.log(w) - mean) / sd)

        # The length term alone, centred on the observed mean: what the judge adds for length.
        curve = quality.mean() + fit["phi"] * (f(grid) - f(words).mean())
        ax.plot(grid, curve, color="C3", label=f"fitted length term, φ_s = {fit['phi']:.1f}")
    ax.set_xscale("log")
    return _save(fig, ax, out_dir / "judge_vs_length.png", x="words (log scale)", y="S_q",
                 title="Judge score against length", legend=True)


def _filters_plot(checks, out_dir: Path) -> Path | None:
    if not checks:
        return None
    failed = Counter(c["filter"] for c in checks if not c["passed"])
    names = sorted({c["filter"] for c in checks})
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.barh(names, [failed[n] for n in names])
    return _save(fig, ax, out_dir / "filters.png", x="rejected", title="Filter rejections")


def reason_kind(reason: str) -> str:
    """A reason with its measured number dropped and its threshold kept, so prompts that failed the
    same way count together: "lc_quality margin -3.21 < 1" → "lc_quality margin below 1"."""
    return re.sub(r"-?\d+(?:\.\d+)? < ", "below ", reason)
