"""A scheduled deployment on a real `prefect server`, triggered with `prefect deployment run`."""

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import duckdb
import httpx

from fault_server import FaultServer
from helpers import PREFECT, free_port, healthy, longform, remote_build, until

def _runs(db: Path) -> list[tuple]:
    if not db.exists():
        return []
    try:
        con = duckdb.connect(str(db), read_only=True)
    except duckdb.Error:  # the flow run holds it for writing
        return []
    try:
        return con.execute("select prefect_flow_run_id, status from runs").fetchall()
    finally:
        con.close()


@pytest.mark.slow
def test_served_deployment_runs_when_triggered(tmp_path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    served = None
    try:
        until(lambda: healthy(api), 180, "prefect server")
        with FaultServer(realistic=True) as fault:
            config = remote_build(tmp_path, fault.base_url, 3, name="nightly")
            served = longform("serve", "--config", str(config), "--cron", "0 2 * * *", cwd=tmp_path,
                              env={"PREFECT_API_URL": api}, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            until(lambda: httpx.get(f"{api}/deployments/name/build/nightly", timeout=5).status_code == 200,
                   120, "the deployment")
            deployment = httpx.get(f"{api}/deployments/name/build/nightly", timeout=5).json()
            assert deployment["schedules"][0]["schedule"]["cron"] == "0 2 * * *"

            triggered = subprocess.run([PREFECT, "deployment", "run", "build/nightly"], env=env, cwd=tmp_path,
                                       capture_output=True, text=True, timeout=120)
            assert triggered.returncode == 0, triggered.stderr
            flow_run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", triggered.stdout).group(1)

            db = tmp_path / "corpus.duckdb"
            until(lambda: (flow_run_id, "finished") in _runs(db), 240, "the flow run's build")
            assert len(fault.received) == 4 * 3

            # A CLI run of the same config reuses what the scheduled run paid for.
            cli = longform("build", "--config", str(config), cwd=tmp_path, env={"PREFECT_API_URL": api})
            assert cli.wait(timeout=300) == 0, cli.stderr.read()
            assert len(fault.received) == 4 * 3
        con = duckdb.connect(str(db), read_only=True)
        assert con.execute("select count(*) from samples").fetchone() == (3,)
        con.close()
    finally:
        for proc in (served, server):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
