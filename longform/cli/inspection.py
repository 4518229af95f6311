"""Reading a corpus: `longform query` (the user's own SQL, the one place raw SQL comes in), `status`,
`report` and `view` (named reads, store/browsing.py); and `migrate`, which brings a database an
older longform wrote up to the schema these reads expect."""

from __future__ import annotations

import csv
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from longform.cli.app import DEFAULT_DB, app, console, err_console, user_errors
from longform.errors import LongformError
from longform.paths import ensure_writable_dir
from longform.store.browsing import CorpusReads


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


@app.command()
def query(
    sql: str = typer.Argument(..., help="SQL to run, read-only."),
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file."),
    format: Format = typer.Option(Format.table, "--format", "-f"),
) -> None:
    """Run SQL over the corpus (the database is opened read-only)."""
    with user_errors():
        from longform.store import read_query

        columns, rows = read_query(db, sql)
        if format is Format.csv:
            # "\n", not the csv module's default "\r\n": on Linux, scripts would read "42\r" (the DuckDB CLI agrees).
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(columns)
            writer.writerows(rows)
        elif format is Format.json:
            print(json.dumps([dict(zip(columns, r)) for r in rows], ensure_ascii=False, default=str, indent=1))
        else:
            table = Table(*columns, show_lines=False)
            for row in rows:
                table.add_row(*("NULL" if v is None else str(v) for v in row))
            console.print(table)


@app.command()
def migrate(db: Path = typer.Option(DEFAULT_DB, help="DuckDB file.")) -> None:
    """Bring a database written by an older longform up to this one's schema (builds do it themselves)."""
    with user_errors():
        from longform.store import Store
        from longform.store.opening import LATEST

        if not db.exists():
            raise LongformError(f"{db}: no database here")
        Store.open(db).close()
        console.print(f"{db}: schema v{LATEST}")


@app.command()
def status(
    run: Optional[str] = typer.Option(None, "--run", help="Run id (default: the latest run)."),
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file."),
) -> None:
    """Per-stage requests, cache hits, tokens, errors and speed of a run, also while it runs."""
    with user_errors():
        with CorpusReads.open(db) as reads:
            found = reads.latest_run(run)
            if found is None:
                raise LongformError(f"{db}: no run {run!r}" if run else f"{db}: no runs yet")
            version = reads.schema_version()
            stages = reads.stage_stats(found["run_id"]) if version >= 2 else []
            endpoints = reads.endpoint_stats(found["run_id"]) if version >= 8 else []
            attempts = reads.shard_attempts(found["run_id"]) if version >= 11 else []
        run_id, name, state = found["run_id"], found["name"], found["status"]
        if version < 2:
            console.print(f"run {run_id} · {name} · {state}: no per-stage stats in a v{version} database;"
                          " the next build upgrades it")
            return
        table = Table("stage", "requests", "cache hits", "retries", "tokens in", "tokens out", "tokens/s",
                      "truncated", "errors", "wall s",
                      title=f"run {run_id} · {name} · {state} · started {found['started_at']}"
                            + (f" · finished {found['finished_at']}" if found["finished_at"] else ""))
        for s in stages:
            requests, wall = s["requests"], s["wall_s"]
            table.add_row(s["stage"], str(requests), str(s["cache_hits"]), str(s["attempts"] - requests),
                          f"{s['tokens_in']:,}", f"{s['tokens_out']:,}",
                          f"{s['tokens_out'] / wall:,.1f}" if wall else "–",
                          f"{s['truncated'] / requests:.0%}" if requests else "–", _errors(s["errors"]), f"{wall:.1f}")
        console.print(table)
        if endpoints:
            _print_endpoints(endpoints)
        _print_shards(found["config"])
        if attempts:
            _print_attempts(attempts)
        endpoint = (found["config"].get("endpoints") or [found["config"].get("endpoint", {})])[0]
        prices = (endpoint.get("price_in_per_mtok"), endpoint.get("price_out_per_mtok"))
        if all(p is not None for p in prices):
            cost = sum(s["tokens_in"] * prices[0] + s["tokens_out"] * prices[1] for s in stages) / 1e6
            console.print(f"estimated cost: {cost:,.4f} at {prices[0]:g} in / {prices[1]:g} out per million tokens")


def _errors(errors: dict) -> str:
    return ", ".join(f"{k} × {v}" for k, v in errors.items()) or "none"


def _print_shards(run_config: dict) -> None:
    """Each shard's own database, read live while its shard writes it."""
    from longform.config import Settings
    from longform.build.shards import shard_db

    settings = Settings.from_stored(run_config)
    n = settings.build.shards
    if n <= 1:
        return
    table = Table("shard", "database", "state", "samples", "failures", "requests", title=f"shards ({n})")
    for i in range(n):
        path = shard_db(settings, i, n)
        try:
            with CorpusReads.open(path) as reads:
                p = reads.progress()
            state, samples, failures, requests = p["state"], p["samples"], p["failures"], p["requests"]
        except LongformError as e:
            state, samples, failures, requests = ("not started" if not path.exists() else str(e)), "–", "–", "–"
        table.add_row(str(i), str(path), str(state), str(samples), str(failures), str(requests))
    console.print(table)


def _print_attempts(attempts: list[dict]) -> None:
    """Every run of every shard the build submitted: a lost machine's crashed attempt and the one
    that redid it."""
    table = Table("shard", "attempt", "state", "worker", "flow run", "resumed its file", "started", "ended", "why",
                  title="shard attempts")
    for a in attempts:
        table.add_row(str(a["shard"]), str(a["attempt"]), a["state"], a["worker"] or "–", a["flow_run_name"] or "–",
                      "yes" if a["file_found"] else "no", str(a["started_at"])[:19], str(a["ended_at"])[:19],
                      a["message"] or "")
    console.print(table)


def _print_endpoints(lanes: list[dict]) -> None:
    table = Table("pool", "endpoint", "state", "limit", "requests", "retried attempts", "failed attempts",
                  "tokens/s", "errors", title="endpoints")
    for e in lanes:
        table.add_row(e["pool"], e["endpoint"], e["state"] + (f" ({e['reason']})" if e["reason"] else ""),
                      str(e["concurrency"]), str(e["requests"]), str(e["attempts"] - e["requests"]),
                      str(e["failed_attempts"]), f"{e['tokens_out'] / e['wall_s']:,.1f}" if e["wall_s"] else "–",
                      _errors(e["errors"]))
    console.print(table)


def scored_run(reads: CorpusReads, db: Path, run: Optional[str]) -> tuple[str, str, dict]:
    """(run id, build name, config) of the given run, or the latest, that has made selections."""
    found = reads.scored_run(run)
    if found is None:
        raise LongformError(f"{db}: no run {run!r} with selections" if run
                            else f"{db}: no run has scored its samples yet; run `longform build`")
    return found["run_id"], found["name"], found["config"]


@app.command()
def report(
    run: Optional[str] = typer.Option(None, "--run", help="Run id (default: the latest run that scored its samples)."),
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file."),
    out: Optional[Path] = typer.Option(None, help="Directory (default: <out_dir>/<build name>/report)."),
) -> None:
    """Markdown report with plots: lengths, S_l, judges and their length bias, filters, selection."""
    with user_errors():
        from judges.report import write_report
        with CorpusReads.open(db) as reads:
            run_id, name, config = scored_run(reads, db, run)
            data = reads.report(run_id)
        out_dir = out or Path(config["build"]["out_dir"]) / name / "report"
        ensure_writable_dir(out_dir, "report folder (--out)")
        path = write_report(data, out_dir)
        console.print(f"report for run {run_id}: {path}")


@app.command()
def view(
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback: only this machine)."),
    port: int = typer.Option(8765, min=0, max=65535),
) -> None:
    """A local, read-only web page to read and audit the corpus: runs, samples, lineage, judges, selections."""
    with user_errors():
        with CorpusReads.open(db) as reads:  # a missing or unreadable database: one line, exit 2
            reads.schema_version()
        import uvicorn

        from longform.viewer.app import create_app

        # The port is taken here, before uvicorn: a port in use is one line, not uvicorn's log and exit 1.
        import socket

        listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((host, port))
        except OSError as e:
            listener.close()
            raise LongformError(f"{host}:{port}: cannot listen there ({e.strerror}); pass --port") from None
        err_console.print(f"longform view: http://{host}:{listener.getsockname()[1]}/ (Ctrl-C stops)")
        config = uvicorn.Config(create_app(db), log_level="warning")
        uvicorn.Server(config).run(sockets=[listener])
