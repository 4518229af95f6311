"""Builds that survive lost machines: a real `prefect server start`, a process work pool, workers
and their flow-run processes killed with SIGKILL as a vanished node would be. Nobody reruns the
command: Prefect's heartbeat automation (set up by `longform deploy`) marks the lost runs Crashed,
and the parent submits their shards again.

Heartbeats every 30 s (Prefect's minimum) and a run silent for 60 s is Crashed: detection comes
between 60 and 90 s after a kill, plus the server's trigger evaluation."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from fault_server import FaultServer
from helpers import PREFECT, descendants, fleet_build, free_port, healthy, longform, rows, until

HEARTBEAT_S, SILENT_S = 30, 60
pytestmark = pytest.mark.slow


class Cluster:
    """A Prefect server, the `longform` work pool and deployment, and the workers a test starts."""

    def __init__(self, root: Path):
        self.root = root
        self.api = f"http://127.0.0.1:{free_port()}/api"
        # Workers look for runs every 2 s instead of 10: each submission waits for the next poll.
        self.env = {**os.environ, "PREFECT_HOME": str(root / "prefect"), "PREFECT_API_URL": self.api,
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "2"}
        self.started: list[subprocess.Popen] = []

    def start(self, *args: str, env: dict | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(args, env={**self.env, **(env or {})}, cwd=self.root, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        self.started.append(proc)
        return proc

    def longform(self, *args: str, **popen) -> subprocess.Popen:
        return longform(*args, cwd=self.root, env={"PREFECT_API_URL": self.api}, **popen)

    def worker(self, env: dict | None = None, limit: int = 1) -> subprocess.Popen:
        # One flow run at a time by default: otherwise one worker may take every shard.
        return self.start(PREFECT, "worker", "start", "--pool", "longform", "--limit", str(limit), env=env)

    def deploy(self) -> str:
        done = self.longform("deploy", "--pool", "longform", "--heartbeat-s", str(HEARTBEAT_S),
                             "--silent-s", str(SILENT_S))
        out, err = done.communicate(timeout=300)
        assert done.returncode == 0, err
        return out

    def automations(self) -> list[dict]:
        found = httpx.post(f"{self.api}/automations/filter", json={}, timeout=30).json()
        return [a for a in found if a["name"].startswith("longform:")]

    def stop(self, procs: list[subprocess.Popen] | None = None) -> None:
        for proc in procs if procs is not None else self.started:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=30)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    made = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        made.start(PREFECT, "server", "start", "--host", "127.0.0.1", "--port", made.api.split(":")[2].split("/")[0])
        until(lambda: healthy(made.api), 180, "prefect server")
        subprocess.run([PREFECT, "work-pool", "create", "longform", "--type", "process"], env=made.env, check=True,
                       capture_output=True, timeout=120)
        first, second = made.deploy(), made.deploy()
        assert "automation created" in first and "automation kept" in second, (first, second)
        yield made
    finally:
        made.stop()


def _shard_of(pid: int) -> int | None:
    """Which shard a flow-run process is writing: the shard database it holds open."""
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        try:
            name = os.readlink(fd)
        except OSError:
            continue
        if "/shards/shard-" in name and name.endswith(".duckdb"):
            return int(Path(name).name.split("-")[1])
    return None


def _writing(worker: subprocess.Popen) -> tuple[list[int], int | None]:
    """(the worker's process tree, the shard its flow run is writing)."""
    tree = [p for p in descendants(worker.pid) if Path(f"/proc/{p}").exists()]
    for p in tree:
        try:
            if "prefect.engine" in Path(f"/proc/{p}/cmdline").read_text() and (shard := _shard_of(p)) is not None:
                return tree, shard
        except OSError:
            continue
    return tree, None


def test_deploying_twice_leaves_one_crash_automation(cluster):
    [automation] = cluster.automations()
    assert automation["trigger"]["posture"] == "Proactive" and automation["trigger"]["within"] == SILENT_S


def test_two_lost_nodes_are_detected_and_their_shards_rerun_one_resumed_one_from_scratch(cluster, tmp_path):
    """Three shards on three workers; two nodes vanish mid-shard (worker and flow run killed), one of
    them with its node-local shard file. The build finishes by itself, equal to the unsharded one."""
    workers = [cluster.worker() for _ in range(3)]
    n_prompts = 18
    try:
        with FaultServer(realistic=True, delay_s=1.0) as a, FaultServer(realistic=True, delay_s=1.0) as b, \
                FaultServer(realistic=True, delay_s=1.0) as c, FaultServer(realistic=True, delay_s=1.0) as d:
            # The unsharded build to compare with, meanwhile, on servers of its own (the stand-in's
            # answers depend only on the request).
            (tmp_path / "whole").mkdir()
            whole = fleet_build(tmp_path / "whole", [c.base_url, d.base_url], n_prompts, name="corpus")
            whole_log = tmp_path / "whole" / "stderr.log"
            unsharded = cluster.longform("build", "--config", str(whole), stdout=subprocess.DEVNULL,
                                         stderr=whole_log.open("w"))
            config = fleet_build(tmp_path, [a.base_url, b.base_url], n_prompts, name="corpus")
            parent = cluster.longform("build", "--config", str(config), "--shards", "3")
            writing: dict[int, tuple[subprocess.Popen, list[int]]] = {}

            def two_shards_are_half_written() -> bool:
                writing.clear()
                for w in workers:
                    tree, shard = _writing(w)
                    if shard is not None:
                        writing[shard] = (w, tree)
                return len(writing) >= 2 and len(a.received) + len(b.received) >= 8

            until(two_shards_are_half_written, 300, "two shards being written")
            (kept_shard, (kept, kept_tree)), (lost_shard, (lost, lost_tree)) = sorted(writing.items())[:2]
            killed_at = time.monotonic()
            for tree, worker in ((kept_tree, kept), (lost_tree, lost)):
                os.killpg(worker.pid, signal.SIGKILL)
                for pid in tree:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            # Node-local storage lost with its node: that shard's database and journal are gone.
            for f in (tmp_path / "out" / "corpus" / "shards").glob(f"shard-{lost_shard}-of-3.duckdb*"):
                f.unlink()

            out, err = parent.communicate(timeout=900)
            assert parent.returncode == 0, err[-3000:]
            finished_after = time.monotonic() - killed_at
            assert unsharded.wait(600) == 0, whole_log.read_text()[-3000:]
    finally:
        cluster.stop(workers)

    db = tmp_path / "corpus.duckdb"
    assert set(rows(db, "select sample_id, text from samples")) == \
        set(rows(tmp_path / "whole" / "corpus.duckdb", "select sample_id, text from samples"))
    assert rows(db, "select count(*) = count(distinct sample_id), count(*) from samples") == [(True, n_prompts)]
    assert rows(db, "select count(*) = count(distinct key) from requests where error is null") == [(True,)]
    attempts = rows(db, "select shard, attempt, state, file_found, worker is not null, ended_at - started_at"
                        " from shard_attempts order by shard, attempt")
    crashed = [(s, n, found) for s, n, state, found, _, _ in attempts if state == "Crashed"]
    assert sorted(crashed) == sorted([(kept_shard, 1, False), (lost_shard, 1, False)]), attempts
    reruns = {s: found for s, n, state, found, _, _ in attempts if n == 2}
    assert reruns == {kept_shard: True, lost_shard: False}, attempts
    assert all(state == "Completed" for _, n, state, *_ in attempts if n == 2), attempts
    assert all(has_worker for *_, has_worker, _ in attempts)
    assert "2 re-submitted after a lost or failed run (1 started over" in out, out
    shown, _ = cluster.longform("status", "--db", str(db)).communicate(timeout=120)
    assert "shard attempts" in shown and shown.count("Crashed") == 2 and "heartbeat" in shown, shown
    # Detected by the automation, not by a person: the whole recovery within the heartbeat settings'
    # bound plus the time to write the two shards again.
    assert finished_after < HEARTBEAT_S + SILENT_S + 240, finished_after


def test_a_shard_that_fails_every_time_ends_the_build_naming_it(cluster, tmp_path):
    """A bad node (its own endpoints file is missing): every run of a shard there fails. After
    [build] shard_attempts the build ends failed, naming the shard; nothing is merged."""
    bad = cluster.worker(env={"LONGFORM_NODE_ENDPOINTS": str(tmp_path / "missing-node.toml")}, limit=2)
    try:
        with FaultServer(realistic=True) as a:
            config = fleet_build(tmp_path, [a.base_url], 2, name="doomed", extra="shard_attempts = 2")
            parent = cluster.longform("build", "--config", str(config), "--shards", "2")
            out, err = parent.communicate(timeout=600)
    finally:
        cluster.stop([bad])
    assert parent.returncode == 2, out + err
    assert "shards failed" in err and "in all 2 attempts" in err and "missing-node.toml" in err, err
    assert rows(tmp_path / "doomed.duckdb", "select count(*) from samples") == [(0,)]
    assert rows(tmp_path / "doomed.duckdb", "select count(*), count(distinct shard) from shard_attempts"
                                            " where state <> 'Completed'") == [(4, 2)]
