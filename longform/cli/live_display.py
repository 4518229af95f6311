"""What a build draws while it runs (a live bar, or one line per sample in a log) and its summary table."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, \
    TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from longform.cli.app import console, err_console


class EngineColumn(ProgressColumn):
    def __init__(self, reporter: "RichReporter"):
        super().__init__()
        self._reporter = reporter

    def render(self, task) -> Text:
        engine = self._reporter.engine
        if engine is None:
            return Text("connecting to the model endpoint…", style="dim")
        try:
            totals = engine.totals()
        except RuntimeError:  # a stage was added while we read; next refresh will show it
            return Text("")
        elapsed = task.elapsed or 0.0
        rate = totals.tokens_out / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:,.0f} tok/s · {totals.requests} sent · {totals.cache_hits} cached"
                    f" · {sum(totals.errors.values())} errors", style="cyan")


class RichReporter:
    def __init__(self) -> None:
        self.engine = None
        self._progress = Progress(SpinnerColumn(), TextColumn("samples"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), EngineColumn(self), console=err_console, transient=False)
        self._task = self._progress.add_task("samples", total=None)
        self.failed = 0

    def __enter__(self) -> "RichReporter":
        self._progress.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            # A failed build ends with its one-line error, not a half-drawn bar above it.
            self._progress.live.transient = True
        self._progress.stop()

    def start(self, total_samples: int, engine: object) -> None:
        self.engine = engine
        self._progress.update(self._task, total=total_samples)
        self._progress.reset(self._task, total=total_samples)

    def sample_done(self, ok: bool) -> None:
        self.failed += int(not ok)
        self._progress.advance(self._task)
        if not err_console.is_terminal:
            # No live bar in a log file or CI: one line per finished sample instead.
            task = self._progress.tasks[0]
            err_console.print(f"samples {task.completed:.0f}/{task.total:.0f} · {self.failed} failed · ",
                              EngineColumn(self).render(task), sep="", highlight=False)

    def note(self, message: str) -> None:
        self._progress.console.print(message, highlight=False)

    def stop(self) -> None:
        self._progress.refresh()


def print_summary(s: dict) -> None:
    table = Table(title=f"build {s['name']} · run {s['run_id']}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    failures = ", ".join(f"{k} × {v}" for k, v in s["failures"].items()) or "none"
    rows = [
        ("samples", f"{s['samples']} ({s['new_samples']} new)"),
        ("resumed runs", ", ".join(s["resumed_runs"]) or "none"),
        *([("accepted", f"{s['accepted']} of {s['candidates']} candidates")] if s["accepted"] is not None else []),
        ("failures", failures),
        ("median length score S_l", "n/a" if s["median_length_score"] is None else f"{s['median_length_score']:.1f}"),
        *scoring_rows(s.get("scoring")),
        ("model requests sent", str(s["requests_sent"])),
        ("answered from cache", str(s["cache_hits"])),
        ("tokens in / out", f"{s['tokens_in']:,} / {s['tokens_out']:,}"),
        ("truncated answers", str(s["truncated"])),
        ("request errors", ", ".join(f"{k} × {v}" for k, v in s["request_errors"].items()) or "none"),
        *([("shards", _shards_line(s["shards"]))] if s.get("shards") else []),
        ("wall time", f"{s['wall_s']:.1f} s"),
        ("exported to", s["export_dir"] or "(export disabled)"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def _shards_line(shards: dict) -> str:
    line = f"{shards['merged']} merged"
    if shards.get("resubmitted"):
        over = len(shards.get("started_over", []))
        line += (f", {shards['resubmitted']} re-submitted after a lost or failed run"
                 f" ({over} started over: its file was lost), {shards['resubmitted_tokens_out']:,} tokens generated"
                 " by their re-runs")
    if shards.get("failed"):
        line += f", {len(shards['failed'])} failed"
    return line


def scoring_rows(scoring: dict | None) -> list[tuple[str, str]]:
    if not scoring:
        return []
    rows = [("selected", f"{scoring['sft_selected']} SFT samples · {scoring['dpo_pairs']} DPO pairs"),
            ("filter rejections", ", ".join(f"{k} × {v}" for k, v in scoring["failed_checks"].items()) or "none")]
    if scoring.get("gateau"):
        g = scoring["gateau"]
        rows.append(("GATEAU", f"ranked {g['ranked']}, kept {g['selected']}, {g.get('not_scored', 0)} not scored;"
                               f" measured {g.get('measured', g['ranked'])}, {g.get('from_cache', 0)} from the cache"))
    for kind, fit in scoring["length_fits"].items():
        if fit["status"] == "fitted":
            value = f"φ = {fit['phi']:.2f} [{fit['ci'][0]:.2f}, {fit['ci'][1]:.2f}] from {fit['n']}"
        else:
            value = f"not identified: {fit['reason']}"
        rows.append((f"{kind} judge length bias", value))
    return rows
