"""The Markdown report of a `longform eval`: a table per model, the paired differences, and a plot
of asked against written length per model (log-log, the identity line drawn)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402

from judges.length_eval import verdict  # noqa: E402

PLOT = "asked_vs_written.png"
_LABELS = {"length_score": "S_l", "eos": "end of sequence", "repetitive": "repetitive", "quality": "S_q"}


def write_eval_report(eval_id: str, models: list[dict], answers: dict[str, list[dict]], pairs: list[dict],
                      out_dir: Path) -> Path:
    """`models`: evals rows (model, source, backend, train_id, summary); `answers`: model → its rows."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = asked_vs_written(answers, out_dir / PLOT)
    lines = [f"# Evaluation {eval_id}", "",
             "Each model answered the same prompts with the same seed and sampling. S_l is LongBench-Write's length",
             "score by the prompt's kind; intervals are percentile-bootstrap 95% over prompts; a difference is",
             "the mean of per-prompt differences with a paired bootstrap interval, and reads as higher or lower",
             "only when its whole interval is.", "",
             "| model | backend | trained | n | mean S_l [95% CI] | median S_l [95% CI] | Ruler PM / FM | bounds kept"
             " | end of sequence | repetitive | written ÷ asked | S_q |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in models:
        s = m["summary"]
        failed = f" (+{s['failed']} failed)" if s["failed"] else ""
        lines.append(f"| {m['model']} | {m['backend']} | {m.get('train_id') or '–'} | {s['answered']}{failed}"
                     f" | {_num(s['mean_length_score'])} {_ci(s['mean_length_score_ci'])}"
                     f" | {_num(s['median_length_score'])} {_ci(s['median_length_score_ci'])}"
                     f" | {_pct(s['ruler_pm'])} / {_pct(s['ruler_fm'])} | {_pct(s['bound_ok_rate'])}"
                     f" | {_pct(s['eos_rate'])} | {_pct(s['repetition_rate'])} | {_num(s['median_written_to_asked'], 2)}"
                     f" | {_num(s['mean_quality'])} {_ci(s['mean_quality_ci'])} |")
    if pairs:
        lines += ["", "## Paired differences (A − B, same prompts)", "",
                  "| A | B | metric | n | mean difference [95% CI] | reads |", "|---|---|---|---|---|---|"]
        for p in pairs:
            scale = 100 if p["metric"] in ("eos", "repetitive") else 1
            unit = " pts" if scale == 100 else ""
            lines.append(f"| {p['model_a']} | {p['model_b']} | {_LABELS.get(p['metric'], p['metric'])} | {p['n']}"
                         f" | {_num(_times(p['mean_diff'], scale))}{unit}"
                         f" {_ci((_times(p['ci_low'], scale), _times(p['ci_high'], scale)))} | {verdict(p)} |")
    if plot:
        lines += ["", f"![asked vs written]({plot.name})"]
    lines += ["", "## Answers", "", "| model | prompt | asked | written | S_l | stop | repetitive |",
              "|---|---|---|---|---|---|---|"]
    for model, rows in answers.items():
        for r in rows:
            asked = _asked(r)
            rep = "yes" if (r.get("repeated_ngram") or r.get("repeated_paragraphs")) else "no"
            lines.append(f"| {model} | {r['prompt_id']} | {asked} | {r['words']} | {r['length_score']:.0f}"
                         f" | {r['error'] and 'failed' or r['finish_reason']} | {rep} |")
    path = out_dir / "report.md"
    tmp = path.with_name(".report.md.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def asked_vs_written(answers: dict[str, list[dict]], path: Path) -> Path | None:
    points = {m: [(r["required_words"], max(r["words"], 1)) for r in rows if not r.get("error")]
              for m, rows in answers.items()}
    if not any(points.values()):
        return None
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    every = [v for pts in points.values() for p in pts for v in p]
    low, high = min(every) * 0.7, max(every) * 1.4
    ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1, label="written = asked")
    for model, pts in points.items():
        if pts:
            ax.scatter([a for a, _ in pts], [w for _, w in pts], s=22, alpha=0.75, label=model)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("asked (words, or characters for Chinese)")
    ax.set_ylabel("written")
    ax.set_title("Asked vs written length")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _asked(r: dict) -> str:
    kind, low, high = r.get("length_kind"), r.get("length_low"), r.get("length_high")
    if kind == "at_most":
        return f"≤ {high}"
    if kind == "at_least":
        return f"≥ {low}"
    if kind == "range":
        return f"{low}–{high}"
    return f"{'~' if kind == 'about' else ''}{r['required_words']}"


def _times(value, scale):
    return None if value is None else value * scale


def _num(value, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pct(value) -> str:
    return "–" if value is None else f"{value:.0%}"


def _ci(pair) -> str:
    low, high = pair if pair else (None, None)
    return "" if low is None else f"[{low:.1f}, {high:.1f}]"
