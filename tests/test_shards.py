"""Sharded builds: N shard databases, an idempotent merge, the corpus-wide stages once on the result."""

import asyncio
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flows.build import build
from longform.errors import LongformError
from longform.store import Store

from fault_server import FaultServer
from helpers import fleet_build, longform, remote_build, rows
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
        proc = longform("build", "--config", str(config), "--shards", "3", "--local", cwd=tmp_path / "sharded",
                        env={"PREFECT_API_URL": prefect})
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
