"""The `longform` command as a user runs it: a real process, real exit codes, real output."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from longform.store import Store

from helpers import tiny_build

LONGFORM = [sys.executable, "-m", "longform.cli"]


def run(*args: str, cwd: Path, env_home: Path, api: str | None = None) -> subprocess.CompletedProcess:
    """The real command in a new process. Without `api` a build starts its own temporary Prefect
    server, as a new user's does (about 15 s here); with it, it uses the session's."""
    env = {**os.environ, "PREFECT_HOME": str(env_home / "prefect"), "COLUMNS": "200",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **({"PREFECT_API_URL": api} if api else {})}
    return subprocess.run([*LONGFORM, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def _one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    config = tiny_build(tmp_path)
    bad_key = tmp_path / "bad.toml"
    bad_key.write_text(config.read_text().replace("max_continuations", "max_continuation"))
    _one_line_error(run("build", "--config", str(bad_key), cwd=tmp_path, env_home=tmp_path),
                    "bad.toml", "unknown key [agentwrite] max_continuation")

    bad_prompts = tmp_path / "bad.jsonl"
    bad_prompts.write_text('{"instruction": "fine"}\n{"instruction": broken}\n')
    _one_line_error(run("build", "--config", str(config), "--prompts", str(bad_prompts), cwd=tmp_path,
                        env_home=tmp_path), "bad.jsonl:2: malformed JSON")

    _one_line_error(run("build", "--config", str(tmp_path / "missing.toml"), cwd=tmp_path, env_home=tmp_path),
                    "missing.toml: config file not found")

    (tmp_path / "a-file").write_text("")
    unwritable = tmp_path / "unwritable.toml"
    unwritable.write_text(config.read_text().replace(f'out_dir = "{tmp_path / "out"}"',
                                                     f'out_dir = "{tmp_path / "a-file" / "out"}"'))
    _one_line_error(run("build", "--config", str(unwritable), cwd=tmp_path, env_home=tmp_path),
                    "a-file/out: output directory is not writable")

    # Refused with the other pre-flight checks: before Prefect starts, and nothing printed after it.
    _one_line_error(run("build", "--config", str(config), "--db", str(tmp_path / "a-file" / "corpus.duckdb"),
                        cwd=tmp_path, env_home=tmp_path / "fresh"), "a-file: database's directory is not writable")
    assert not (tmp_path / "fresh" / "prefect").exists()  # Prefect never ran

    newer = tmp_path / "newer.duckdb"
    with Store.open(newer) as store:
        store._con.execute("insert into schema_version values (99, now())")
    _one_line_error(run("build", "--config", str(config), "--db", str(newer), cwd=tmp_path, env_home=tmp_path),
                    "schema v99, newer than")
    _one_line_error(run("query", "select 1", "--db", str(newer), cwd=tmp_path, env_home=tmp_path),
                    "schema v99, newer than")
    _one_line_error(run("query", "select 1", "--db", str(tmp_path / "none.duckdb"), cwd=tmp_path,
                        env_home=tmp_path), "no database here yet")
    two_writers = tmp_path / "two.toml"
    two_writers.write_text(config.read_text() + '\n[writers]\nenabled = ["agentwrite", "self_lengthen"]\n')
    _one_line_error(run("build", "--config", str(two_writers), "--until-accepted", "2", cwd=tmp_path,
                        env_home=tmp_path), "--until-accepted runs one writer", "agentwrite, self_lengthen")
    min_above_max = tmp_path / "bounds.jsonl"
    min_above_max.write_text('{"instruction": "Write about tea.", "min_words": 900, "max_words": 300}\n')
    _one_line_error(run("build", "--config", str(config), "--prompts", str(min_above_max), cwd=tmp_path,
                        env_home=tmp_path), "bounds.jsonl:1: 'min_words' 900 is above 'max_words' 300")
    assert not (tmp_path / "corpus.duckdb").exists()  # nothing was started for bad input


@pytest.mark.slow
@pytest.mark.embedded
def test_endpoint_down_at_start_is_one_line_and_recorded(tmp_path, prefect):
    config = tiny_build(tmp_path)
    down = tmp_path / "down.toml"
    down.write_text(config.read_text().replace('kind = "embedded"',
                                               'kind = "openai"\nbase_url = "http://127.0.0.1:9/v1"'))
    _one_line_error(run("build", "--config", str(down), cwd=tmp_path, env_home=tmp_path, api=prefect),
                    "http://127.0.0.1:9/v1: endpoint not usable")
    with Store.open(tmp_path / "corpus.duckdb") as store:
        assert store.query("select status from runs")[1] == [("failed",)]


@pytest.mark.slow
@pytest.mark.embedded
def test_build_then_query_then_rebuild_from_cache(tmp_path, prefect):
    config = tiny_build(tmp_path)
    db = tmp_path / "corpus.duckdb"
    first = run("build", "--config", str(config), cwd=tmp_path, env_home=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "model requests sent" in first.stdout and "answered from cache" in first.stdout

    count = run("query", "select count(*) as n from samples", "--db", str(db), "--format", "csv",
                cwd=tmp_path, env_home=tmp_path)
    assert count.returncode == 0, count.stderr
    n = int(count.stdout.splitlines()[1])
    assert n == 2   # one sample per prompt (tiny_build asks for one candidate each)

    refused = run("query", "delete from samples", "--db", str(db), cwd=tmp_path, env_home=tmp_path)
    _one_line_error(refused, "query refused: DELETE")

    # The first build ran as a new user's (its own temporary Prefect server); the rerun uses the session's.
    again = run("build", "--config", str(config), cwd=tmp_path, env_home=tmp_path, api=prefect)
    assert again.returncode == 0, again.stderr[-3000:]
    sent = [line for line in again.stdout.splitlines() if "model requests sent" in line]
    assert sent and sent[0].split()[-2] == "0", again.stdout
    as_json = run("query", "select count(*) as n from samples", "--db", str(db), "-f", "json",
                  cwd=tmp_path, env_home=tmp_path)
    assert '"n": ' + str(n) in as_json.stdout


def test_query_while_another_process_writes_is_answered_by_the_writer(tmp_path):
    db = tmp_path / "corpus.duckdb"
    writer = Store.open(db, live=True, flush_interval_s=3600)
    try:
        writer.start_run("r-live", "live", {}, None, None)
        answered = run("query", "select run_id, status from runs", "--db", str(db), "-f", "csv",
                       cwd=tmp_path, env_home=tmp_path)
        assert answered.returncode == 0, answered.stderr
        assert answered.stdout.splitlines() == ["run_id,status", "r-live,running"]

        refused = run("query", "delete from runs", "--db", str(db), cwd=tmp_path, env_home=tmp_path)
        _one_line_error(refused, "query refused: DELETE")

        # A writer that cannot be reached (killed, or its address file removed) leaves a clear message.
        (tmp_path / "corpus.duckdb.reader").unlink()
        busy = run("query", "select 1", "--db", str(db), cwd=tmp_path, env_home=tmp_path)
        _one_line_error(busy, "open for writing by another longform process", f"PID {os.getpid()}")
    finally:
        writer.close()


def test_query_csv_ends_lines_with_a_newline_only(tmp_path):
    db = tmp_path / "q.duckdb"
    Store.open(db).close()
    out = run("query", "select 42 as answer, 'a,b' as text", "--db", str(db), "--format", "csv",
              cwd=tmp_path, env_home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == 'answer,text\n42,"a,b"\n'


def test_every_commands_help_keeps_the_config_sections_it_names():
    """Help texts name config sections in brackets ([build] db); rendered as rich markup they vanished."""
    import re

    import typer
    from typer.testing import CliRunner

    from longform.cli import app

    group = typer.main.get_command(app)
    checked = 0
    for name, command in group.commands.items():
        named = {m for p in command.params for m in re.findall(r"\[[a-z_.]+\]", getattr(p, "help", None) or "")}
        if not named:
            continue
        out = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "200"}).output
        assert all(section in out for section in named), (name, named, out)
        checked += 1
    assert checked >= 3   # build, deploy, export, select, train name sections


def test_os_errors_and_broken_pipes_at_the_root(tmp_path):
    """One place turns a path that cannot be read into one line, and a closed pipe into a quiet exit."""
    _one_line_error(run("build", "--config", str(tmp_path), cwd=tmp_path, env_home=tmp_path),
                    f"{tmp_path}: Is a directory")
    db = tmp_path / "e.duckdb"
    with Store.open(db) as store:
        store.query("select 1")
    reader = subprocess.Popen([*LONGFORM, "query", "select * from range(5000)", "--db", str(db)], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reader.stdout.readline()
    reader.stdout.close()          # `| head -1`
    err = reader.stderr.read()
    assert reader.wait(timeout=120) == 0 and "Traceback" not in err and "BrokenPipe" not in err
