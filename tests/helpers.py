import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx

TINY_CONFIG = """
[build]
name = "{name}"
prompts = "{prompts}"
db = "{db}"
out_dir = "{out}"

[endpoint]
kind = "embedded"

[agentwrite]
plan_max_tokens = 200
max_section_words = 40
max_continuations = 0
"""

TINY_PROMPTS = (
    '{"id": "en", "instruction": "Write about a rainy morning.", "target_words": 60}\n'
    '{"id": "zh", "instruction": "写一篇50字的短文，介绍月亮。"}\n'
)


def tiny_build(tmp_path: Path, name: str = "tiny") -> Path:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(TINY_PROMPTS, encoding="utf-8")
    config = tmp_path / "build.toml"
    config.write_text(TINY_CONFIG.format(name=name, prompts=prompts, db=tmp_path / "corpus.duckdb",
                                         out=tmp_path / "out"), encoding="utf-8")
    return config


def remote_build(tmp_path: Path, base_url: str, n_prompts: int, *, name: str = "remote",
                 db_name: str = "corpus.duckdb", extra: str = "", endpoint_extra: str = "") -> Path:
    """A build against an OpenAI-compatible test server: every prompt asks for 180 words, which the
    realistic stand-in (60 words a section) writes as a plan and three sections, in band."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(f'{{"id": "p{i:03d}", "instruction": "Write about topic {i}.", "target_words": 180}}\n'
                               for i in range(n_prompts)), encoding="utf-8")
    config = tmp_path / f"{name}.toml"
    config.write_text(f"""
[build]
name = "{name}"
prompts = "{prompts}"
db = "{tmp_path / db_name}"
out_dir = "{tmp_path / 'out'}"
{extra}

[endpoint]
kind = "openai"
base_url = "{base_url}"
model = "fault-model"
timeout_s = 5
backoff_base_s = 0.01
backoff_max_s = 0.05
{endpoint_extra}
""", encoding="utf-8")
    return config


def longform(*args: str, cwd: Path, env: dict | None = None, **popen) -> subprocess.Popen:
    """Start the real `longform` command in a new process."""
    full_env = {**os.environ, "PREFECT_HOME": str(cwd / "prefect"), "COLUMNS": "200",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **(env or {})}
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen}
    return subprocess.Popen([sys.executable, "-m", "longform.cli", *args], cwd=cwd, env=full_env, text=True,
                            **streams)


def rows(db: Path, sql: str, params: list | None = None) -> list[tuple]:
    """Read a test's database the way a user would: another connection, read-only."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def fleet_build(tmp_path: Path, urls: list[str], n_prompts: int, *, name: str, concurrency: int = 2,
                extra: str = "") -> Path:
    """remote_build's prompts and settings, with one [[endpoints]] table per URL."""
    config = remote_build(tmp_path, urls[0], n_prompts, name=name, db_name=f"{name}.duckdb", extra=extra)
    text = config.read_text()
    head, endpoint = text.split("[endpoint]\n")
    settings = endpoint.replace(f'base_url = "{urls[0]}"\n', "")
    tables = "".join(f'[[endpoints]]\nbase_url = "{url}"\nconcurrency = {concurrency}\ncooldown_s = 60\n{settings}\n'
                     for url in urls)
    config.write_text(head + tables)
    return config


def descendants(pid: int) -> set[int]:
    """Every living process under `pid`, from /proc (zombies, already dead, are left out)."""
    parent_of = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parent_of[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parent_of.items() if parent in frontier} - found
        found |= frontier
    return found


def cli(*args: str, cwd: Path) -> tuple[int, str, str]:
    """The `longform` command run in this process (Typer's runner): (exit code, stdout, stderr). For
    commands whose test is about what they do, not about being a process of their own: a new Python
    process importing torch, transformers and TRL costs about 10 s here, once per call."""
    from contextlib import chdir

    from typer.testing import CliRunner

    from longform.cli.app import app

    with chdir(cwd):
        result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


PREFECT = str(Path(sys.executable).with_name("prefect"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
