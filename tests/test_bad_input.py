"""Every command against every class of bad input: exit code 2, one line on stderr starting
`error:`, no traceback, and no database changed.

Run in-process with Typer's runner (each case costs milliseconds, not a Python start-up): an
exception that escaped the CLI's error handling shows up as `result.exception` that is not a
SystemExit, which is what a traceback would have been."""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from longform.cli import app
from longform.store.schema import MIGRATIONS
from viewer_corpus import write_corpus


class Inputs:
    """One of each kind of bad input, and the good ones each case needs besides."""

    def __init__(self, root: Path):
        self.root = root
        self.good_db = root / "good.duckdb"
        write_corpus(self.good_db)
        self.text_db = root / "text.duckdb"
        self.text_db.write_text("not a database\n")
        self.sqlite_db = root / "sqlite.duckdb"
        con = sqlite3.connect(self.sqlite_db)
        con.execute("CREATE TABLE t (x)")
        con.commit()
        con.close()
        self.foreign_db = root / "foreign.duckdb"   # a DuckDB file another program wrote
        con = duckdb.connect(str(self.foreign_db))
        con.execute("CREATE TABLE people (name VARCHAR)")
        con.close()
        self.old_db = root / "old.duckdb"           # as the release before fleets (schema v7) left it
        con = duckdb.connect(str(self.old_db))
        con.execute("CREATE TABLE schema_version (version INTEGER, applied_at TIMESTAMPTZ)")
        for number, migration in enumerate(MIGRATIONS[:7], start=1):
            con.execute(migration)
            con.execute("INSERT INTO schema_version VALUES (?, now())", [number])
        con.close()
        self.missing = root / "missing.duckdb"
        self.folder = root / "a-folder"
        self.folder.mkdir()
        self.a_file = root / "a-file"
        self.a_file.write_text("x")
        # Unreadable: as root (CI) no permission bit stops a read, so a symlink to itself does
        # (ELOOP from open(), an OSError like EACCES).
        self.unreadable = root / "unreadable.toml"
        if os.geteuid() == 0:
            os.symlink(self.unreadable, self.unreadable)
        else:
            self.unreadable.write_text("[build]\n")
            self.unreadable.chmod(0)
        self.binary = root / "binary.toml"
        self.binary.write_bytes(b"\xff\xfe\x00 not text")
        self.prompts = root / "prompts.jsonl"
        self.prompts.write_text('{"instruction": "Write about tea.", "target_words": 100}\n')
        self.config = self._config("good", f'[build]\nprompts = "{self.prompts}"\ndb = "{root / "new.duckdb"}"\n'
                                           f'out_dir = "{root / "out"}"\n')
        self.wrong_type = self._config("wrong-type", f'[build]\nprompts = "{self.prompts}"\nshards = "two"\n')
        self.not_a_table = self._config("not-a-table", "build = 3\n")
        self.not_a_model = root / "not-a-model"
        self.not_a_model.mkdir()
        (self.not_a_model / "notes.txt").write_text("no weights here")
        self.dataset = root / "export"
        (self.dataset / "sft").mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist([{"messages": [{"role": "user", "content": "Write."},
                                                           {"role": "assistant", "content": "Text."}]}]),
                       self.dataset / "sft" / "train.parquet")
        self.port_holder = socket.socket()
        self.port_holder.bind(("127.0.0.1", 0))
        self.port_holder.listen()
        self.busy_port = str(self.port_holder.getsockname()[1])

    def _config(self, name: str, text: str) -> Path:
        path = self.root / f"{name}.toml"
        path.write_text(text)
        return path

    def databases(self) -> dict[str, str]:
        """Every database file (and anything beside it: journals, WALs) by name → content hash."""
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(self.root.glob("*.duckdb*"))
                if p.is_file()}


# (case, the command line given the inputs, a phrase the one line must contain)
CASES = [
    # build
    ("build: config missing", lambda i: ["build", "-c", i.root / "none.toml"], "config file not found"),
    ("build: config is a folder", lambda i: ["build", "-c", i.folder], "a-folder"),
    ("build: config unreadable", lambda i: ["build", "-c", i.unreadable], "unreadable.toml"),
    ("build: config not text", lambda i: ["build", "-c", i.binary], "not UTF-8"),
    ("build: config value of the wrong type", lambda i: ["build", "-c", i.wrong_type], "[build] shards"),
    ("build: [build] not a table", lambda i: ["build", "-c", i.not_a_table], "build"),
    ("build: prompts a folder", lambda i: ["build", "-c", i.config, "--prompts", i.folder], "a-folder"),
    ("build: prompts not text", lambda i: ["build", "-c", i.config, "--prompts", i.binary], "not UTF-8"),
    ("build: database is text", lambda i: ["build", "-c", i.config, "--db", i.text_db], "not a DuckDB database"),
    ("build: database is SQLite", lambda i: ["build", "-c", i.config, "--db", i.sqlite_db], "SQLite"),
    ("build: another program's database", lambda i: ["build", "-c", i.config, "--db", i.foreign_db],
     "another program"),
    ("build: database a folder", lambda i: ["build", "-c", i.config, "--db", i.folder], "a-folder"),
    ("build: shards and --until-accepted", lambda i: ["build", "-c", i.config, "--shards", "2",
                                                      "--until-accepted", "3"], "cannot be sharded"),
    ("build-shard: a shard out of range", lambda i: ["build-shard", "-c", i.config, "--shard", "5", "--shards", "2"],
     "shard"),
    # serve, deploy
    ("serve: config a folder", lambda i: ["serve", "-c", i.folder], "a-folder"),
    ("serve: config value of the wrong type", lambda i: ["serve", "-c", i.wrong_type], "[build] shards"),
    ("deploy: no Prefect server configured", lambda i: ["deploy"], "PREFECT_API_URL"),
    # reads
    ("query: no database", lambda i: ["query", "select 1", "--db", i.missing], "no database here"),
    ("query: database a folder", lambda i: ["query", "select 1", "--db", i.folder], "a directory"),
    ("query: database is text", lambda i: ["query", "select 1", "--db", i.text_db], "not a DuckDB database"),
    ("query: database is SQLite", lambda i: ["query", "select 1", "--db", i.sqlite_db], "SQLite"),
    ("query: writes refused", lambda i: ["query", "delete from runs", "--db", i.good_db], "query refused"),
    ("status: no database", lambda i: ["status", "--db", i.missing], "no database here"),
    ("status: another program's database", lambda i: ["status", "--db", i.foreign_db], "another program"),
    ("status: older schema", lambda i: ["status", "--db", i.old_db], "longform migrate"),
    ("status: unknown run", lambda i: ["status", "--db", i.good_db, "--run", "r-nope"], "r-nope"),
    ("report: database is text", lambda i: ["report", "--db", i.text_db], "not a DuckDB database"),
    ("report: older schema", lambda i: ["report", "--db", i.old_db], "longform migrate"),
    ("report: output onto a file", lambda i: ["report", "--db", i.good_db, "--out", i.a_file], "not writable"),
    ("view: no database", lambda i: ["view", "--db", i.missing, "--port", "0"], "no database here"),
    ("view: database is text", lambda i: ["view", "--db", i.text_db, "--port", "0"], "not a DuckDB database"),
    ("view: port in use", lambda i: ["view", "--db", i.good_db, "--port", i.busy_port], "cannot listen"),
    ("migrate: database is text", lambda i: ["migrate", "--db", i.text_db], "not a DuckDB database"),
    ("migrate: another program's database", lambda i: ["migrate", "--db", i.foreign_db], "another program"),
    # dataset commands
    ("export: database is SQLite", lambda i: ["export", "--db", i.sqlite_db], "SQLite"),
    ("export: another program's database", lambda i: ["export", "--db", i.foreign_db], "another program"),
    ("export: older schema", lambda i: ["export", "--db", i.old_db], "longform migrate"),
    ("export: output onto a file", lambda i: ["export", "--db", i.good_db, "--out-dir", i.a_file], "not writable"),
    ("export: evaluation prompts missing", lambda i: ["export", "--db", i.good_db, "--out-dir", i.root / "out",
                                                       "--decontaminate", i.root / "none.jsonl"], "not found"),
    ("select: database is text", lambda i: ["select", "--db", i.text_db], "not a DuckDB database"),
    ("select: older schema", lambda i: ["select", "--db", i.old_db], "longform migrate"),
    ("select: config value of the wrong type", lambda i: ["select", "--db", i.good_db, "-c", i.wrong_type],
     "[build] shards"),
    ("train: no such export", lambda i: ["train", "sft", "--dataset", i.root / "none", "--db", i.good_db],
     "no such export folder"),
    ("train: export is a file", lambda i: ["train", "sft", "--dataset", i.a_file, "--db", i.good_db],
     "no such export folder"),
    ("train: config value of the wrong type", lambda i: ["train", "sft", "--dataset", i.dataset, "-c", i.wrong_type,
                                                          "--db", i.good_db], "[build] shards"),
    ("train: a folder that is not a model", lambda i: ["train", "sft", "--dataset", i.dataset, "--model",
                                                        i.not_a_model, "--db", i.good_db], "not a model"),
    ("train: output onto a file", lambda i: ["train", "sft", "--dataset", i.dataset, "--output", i.a_file,
                                             "--db", i.good_db], "not writable"),
    ("eval: prompts missing", lambda i: ["eval", "--prompts", i.root / "none.jsonl", "--db", i.good_db], "not found"),
    ("eval: prompts a folder", lambda i: ["eval", "--prompts", i.folder, "--db", i.good_db], "a-folder"),
    ("eval: prompts not text", lambda i: ["eval", "--prompts", i.binary, "--db", i.good_db], "not UTF-8"),
    ("eval: database is text", lambda i: ["eval", "--db", i.text_db, "--limit", "1"], "not a DuckDB database"),
    ("eval: a folder that is not a model", lambda i: ["eval", "--model", i.not_a_model, "--db", i.good_db,
                                                      "--limit", "1"], "not a model"),
    ("eval-length: prompts missing", lambda i: ["eval-length", "--prompts", i.root / "none.jsonl", "--db",
                                                 i.good_db], "not found"),
    ("eval: output onto a file", lambda i: ["eval", "--endpoint", "http://127.0.0.1:9/v1", "--db", i.good_db,
                                            "--out", i.a_file, "--limit", "1"], "not writable"),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    made = Inputs(tmp_path_factory.mktemp("bad-input"))
    yield made
    made.port_holder.close()


def test_every_command_is_covered():
    covered = {name.split(":")[0] for name, _, _ in CASES}
    commands = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
    assert commands <= covered, f"no bad-input case for: {sorted(commands - covered)}"


@pytest.mark.parametrize("name, argv, phrase", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2_and_changes_nothing(inputs, monkeypatch, name, argv, phrase):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    before = inputs.databases()
    result = CliRunner().invoke(app, [str(a) for a in argv(inputs)])
    lines = result.stderr.strip().splitlines()
    assert isinstance(result.exception, SystemExit), f"escaped the CLI: {result.exception!r}"
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert phrase in lines[0], lines[0]
    assert inputs.databases() == before
