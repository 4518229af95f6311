"""Sharded builds: N shard databases, an idempotent merge, the corpus-wide stages once on the result."""

import asyncio
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flows.build import build
from longform.errors import LongformError
from longform.store import Store

from fault_server import FaultServer
from helpers import descendants, fleet_build, longform, remote_build, rows
from test_cli import _one_line_error, run


def _outcome(db: Path, out: Path) -> dict:
    """What a user gets: samples, decisions, and the exported rows."""
    export = {split.parent.name + "/" + split.stem: sorted(map(str, pq.read_table(split).to_pylist()))
              for split in out.rglob("*.parquet")}
    return {
        "samples": set(rows(db, "select sample_id, text from samples")),
        "selections": set(rows(db, "select purpose, sample_id, rejected_sample_id, selected, reason from selections"
                                   " where run_id = (select max(run_id) from selections)")),
        "checks": set(rows(db, "select subject_id, filter, passed from filter_checks"
                               " where run_id = (select max(run_id) from selections)")),
        "export": export,
    }


@pytest.mark.slow
def test_a_local_sharded_build_equals_the_unsharded_one_and_merges_idempotently(tmp_path, prefect):
    with FaultServer(realistic=True) as a, FaultServer(realistic=True) as b:
        (tmp_path / "whole").mkdir()
        whole = fleet_build(tmp_path / "whole", [a.base_url, b.base_url], 10, name="corpus")
        asyncio.run(build(config=str(whole)))
        sent = len(a.received) + len(b.received)

        (tmp_path / "sharded").mkdir()
        config = fleet_build(tmp_path / "sharded", [a.base_url, b.base_url], 10, name="corpus")
        proc = longform("build", "--config", str(config), "--shards", "3", "--local", cwd=tmp_path / "sharded")
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        assert "merged 3 shard(s)" in err + out
        # Each sample was written once: the shards together sent what the whole build sent.
        assert len(a.received) + len(b.received) == 2 * sent

    shard_files = sorted((tmp_path / "sharded" / "out" / "corpus" / "shards").glob("shard-*-of-3.duckdb"))
    assert len(shard_files) == 3
    assert sum(rows(f, "select count(*) from samples")[0][0] for f in shard_files) == 10
    assert all(rows(f, "select count(*) from samples")[0][0] > 0 for f in shard_files)
    whole_db, sharded_db = tmp_path / "whole" / "corpus.duckdb", tmp_path / "sharded" / "corpus.duckdb"
    expected = _outcome(whole_db, tmp_path / "whole" / "out" / "corpus")
    got = _outcome(sharded_db, tmp_path / "sharded" / "out" / "corpus")
    assert got["samples"] == expected["samples"] and len(got["samples"]) == 10
    assert got["checks"] == expected["checks"]          # near-duplicates across shards were found
    assert {s[:4] for s in got["selections"]} == {s[:4] for s in expected["selections"]}
    assert got["export"] == expected["export"] and got["export"]

    # `status` shows the build's run (not a merged shard run) and each shard's file.
    status = run("status", "--db", str(sharded_db), cwd=tmp_path, env_home=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "shards (3)" in status.stdout and status.stdout.count("finished") >= 4, status.stdout

    # Merging again changes nothing.
    counts = rows(sharded_db, "select (select count(*) from samples), (select count(*) from requests),"
                              " (select count(*) from texts), (select count(*) from sections)")
    with Store.open(sharded_db) as store:
        assert [store.merge_shard(f, "corpus")[0] for f in shard_files] == [0, 0, 0]
    assert rows(sharded_db, "select (select count(*) from samples), (select count(*) from requests),"
                            " (select count(*) from texts), (select count(*) from sections)") == counts


def test_sharded_build_refuses_bad_input_in_one_line(tmp_path):
    config = remote_build(tmp_path, "http://127.0.0.1:9/v1", 3, name="corpus")
    _one_line_error(run("build", "--config", str(config), "--shards", "0", "--local", cwd=tmp_path, env_home=tmp_path),
                    "--shards 0: needs at least 1")
    (tmp_path / "a-file").write_text("")
    blocked = tmp_path / "blocked.toml"
    blocked.write_text(config.read_text().replace("[build]\n", f'[build]\nshard_dir = "{tmp_path / "a-file" / "s"}"\n'))
    _one_line_error(run("build", "--config", str(blocked), "--shards", "2", "--local", cwd=tmp_path,
                        env_home=tmp_path), "shard directory is not writable")

    other = tmp_path / "other.duckdb"
    with Store.open(other) as store:
        store.start_run("r-x", "another-build", {}, None, None)
        store.finish_run("r-x", "finished", {})
    with Store.open(tmp_path / "corpus.duckdb") as store:
        before = store.query("select count(*) from runs")[1]
        with pytest.raises(LongformError, match=r"a shard of build 'another-build', not of 'corpus'"):
            store.merge_shard(other, "corpus")
        assert store.query("select count(*) from runs")[1] == before


@pytest.mark.slow
def test_shards_on_prefect_workers_survive_a_killed_worker(tmp_path):
    """A real `prefect server start`, a process work pool, two workers: one is killed with its shard
    half done; the same command, run again, completes it with nothing duplicated."""
    import os
    import signal
    import subprocess
    import time

    from test_deployment import PREFECT, _free_port, _healthy, _until

    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    started: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        proc = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        started.append(proc)
        return proc

    def shards_finished() -> int:
        done = 0
        for f in (tmp_path / "out" / "corpus" / "shards").glob("shard-*-of-3.duckdb"):
            try:
                done += rows(f, "select count(*) > 0 from runs where status = 'finished'") == [(True,)]
            except Exception:  # still being written
                pass
        return done

    try:
        start(PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port))
        _until(lambda: _healthy(api), 180, "prefect server")
        subprocess.run([PREFECT, "work-pool", "create", "longform", "--type", "process"], env=env, check=True,
                       capture_output=True, timeout=120)
        deployed = longform("deploy", "--pool", "longform", cwd=tmp_path, env={"PREFECT_API_URL": api})
        out, err = deployed.communicate(timeout=300)
        assert deployed.returncode == 0, err
        # One flow run at a time per worker: otherwise one worker may take all three shards, and killing it
        # leaves no survivor to finish any.
        workers = [start(PREFECT, "worker", "start", "--pool", "longform", "--limit", "1") for _ in range(2)]

        with FaultServer(realistic=True, delay_s=0.4) as a, FaultServer(realistic=True, delay_s=0.4) as b:
            (tmp_path / "whole").mkdir()
            whole = fleet_build(tmp_path / "whole", [a.base_url, b.base_url], 12, name="corpus")
            assert longform("build", "--config", str(whole), cwd=tmp_path, env={"PREFECT_API_URL": api}).wait(600) == 0

            config = fleet_build(tmp_path, [a.base_url, b.base_url], 12, name="corpus")
            parent = longform("build", "--config", str(config), "--shards", "3", cwd=tmp_path,
                              env={"PREFECT_API_URL": api}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            busy: list[subprocess.Popen] = []

            def a_worker_is_writing() -> bool:
                busy[:] = [w for w in workers if any("prefect.engine" in Path(f"/proc/{p}/cmdline").read_text()
                                                     for p in descendants(w.pid) if Path(f"/proc/{p}").exists())]
                return bool(busy) and len(a.received) + len(b.received) >= 2 * 12 + 3

            _until(a_worker_is_writing, 300, "a shard being written")
            victim = busy[0]
            for pid in descendants(victim.pid):
                os.kill(pid, signal.SIGKILL)
            os.killpg(victim.pid, signal.SIGKILL)
            # The victim's shard run stays "running" on the server: this parent would wait for it. Once the
            # other worker has written the rest, stop the parent and run the same command again.
            _until(lambda: shards_finished() >= 1, 600, "the surviving worker's shards")
            time.sleep(2)
            parent.kill()
            parent.wait()
            start(PREFECT, "worker", "start", "--pool", "longform", "--limit", "1")
            again = longform("build", "--config", str(config), "--shards", "3", cwd=tmp_path,
                             env={"PREFECT_API_URL": api})
            out, err = again.communicate(timeout=600)
            assert again.returncode == 0, err

        db = tmp_path / "corpus.duckdb"
        assert set(rows(db, "select sample_id, text from samples")) == \
            set(rows(tmp_path / "whole" / "corpus.duckdb", "select sample_id, text from samples"))
        assert rows(db, "select count(*) = count(distinct sample_id) from samples") == [(True,)]
        assert rows(db, "select count(*) = count(distinct key) from requests where error is null") == [(True,)]
        assert len(rows(db, "select 1 from samples")) == 12
    finally:
        for proc in started:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=30)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    os.killpg(proc.pid, signal.SIGKILL)
