from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.testing.utilities import prefect_test_harness

from longform.engine import Endpoint
from longform.engine import Engine
from longform.engine.retry import RetryPolicy
from longform.store import Store

ROOT = Path(__file__).resolve().parents[1]

# Under pytest-xdist each worker gets its share of the cores, for its embedded servers
# (LONGFORM_THREADS), torch (OMP_NUM_THREADS) and every subprocess it starts: llama.cpp's and
# OpenMP's threads spin while they wait, and two workers each using every core run many times
# slower than both sharing (a tiny build took 328 s instead of 16 s). With more workers than cores
# each gets one thread, and a single thread has nothing to spin for.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    os.environ.setdefault("LONGFORM_THREADS", _share)
    os.environ.setdefault("OMP_NUM_THREADS", _share)


# Files by measured time, longest first (3 workers, 2 cores; `--durations`, 2026-12-04). The lost-machine
# module is mostly waiting for Prefect's heartbeat window: started first, the others fill its worker.
LONGEST = ["test_lost_machines.py", "test_reliability.py", "test_training.py", "test_gateau.py",
           "test_self_lengthen.py", "test_cli.py", "test_eval.py", "test_embedded.py", "test_lora_serving.py",
           "test_deployment.py"]


def pytest_collection_modifyitems(items):
    """Markers from what a test uses, so `-m "not embedded"` and the like need no list to keep up:
    `embedded` for the real llama.cpp server, `prefect` for Prefect's test harness. Tests that start
    these in subprocesses carry the marker themselves; `slow` (over ~10 s here) is set by hand.

    The longest files run first (LONGEST, measured with `--durations`), then the rest by their number
    of slow tests: xdist hands out files in this order (with `--no-loadscope-reorder`, as the Makefile
    runs it; by default it orders files by their number of tests), and a long file started last
    leaves one worker running it alone at the end."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "embedded" in names:
            item.add_marker(pytest.mark.embedded)
        if "prefect" in names:
            item.add_marker(pytest.mark.prefect)
    slow_per_file: dict[str, int] = {}
    for item in items:
        slow_per_file[item.fspath.basename] = slow_per_file.get(item.fspath.basename, 0) + \
            (item.get_closest_marker("slow") is not None)
    order = {item: i for i, item in enumerate(items)}

    def key(item):
        name = item.fspath.basename
        return (LONGEST.index(name) if name in LONGEST else len(LONGEST), -slow_per_file[name], order[item])

    items.sort(key=key)


@pytest.fixture(scope="session")
def embedded() -> Endpoint:
    """The real embedded llama.cpp server, started once for the whole session."""
    from longform.models.embedded import MODEL_ALIAS, EmbeddedServer, chat_renderer

    with EmbeddedServer() as server:
        yield Endpoint(server.base_url, MODEL_ALIAS, "json_object", server.context_window,
                       continuation="completions", render_chat=chat_renderer(server.model_path))


def pytest_configure(config):
    """Under xdist the controller makes a folder its workers share (they inherit the environment):
    the session's one Prefect server lives there."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None and config.pluginmanager.hasplugin("xdist") \
            and getattr(config.option, "numprocesses", None):
        os.environ["LONGFORM_TEST_SHARED"] = tempfile.mkdtemp(prefix="longform-tests-")


def pytest_unconfigure(config):
    shared = os.environ.get("LONGFORM_TEST_SHARED")
    if shared and os.environ.get("PYTEST_XDIST_WORKER") is None:   # the controller, after every worker
        pid = Path(shared, "prefect.pid")
        if pid.exists():
            try:
                os.killpg(int(pid.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass
        shutil.rmtree(shared, ignore_errors=True)


@pytest.fixture(scope="session")
def prefect() -> str:
    """One Prefect backend for the session; subprocess builds reach it through the API URL it yields.
    Under xdist the first worker to ask starts `prefect server start` in the shared folder and the
    others use it (each start costs 15-20 s of CPU here; the controller stops it at the end); run
    alone, Prefect's test harness."""
    shared = os.environ.get("LONGFORM_TEST_SHARED")
    if not shared:
        with prefect_test_harness(server_startup_timeout=120):
            yield PREFECT_API_URL.value()
        return
    from filelock import FileLock

    from helpers import PREFECT, free_port, healthy, until

    with FileLock(Path(shared, "prefect.lock")):
        address = Path(shared, "prefect.url")
        if not address.exists():
            port = free_port()
            env = {**os.environ, "PREFECT_HOME": str(Path(shared, "prefect-home")),
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
            server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True)
            Path(shared, "prefect.pid").write_text(str(server.pid))
            api = f"http://127.0.0.1:{port}/api"
            until(lambda: healthy(api), 180, "the session's prefect server")
            address.write_text(api)
        api = address.read_text()
    import prefect.context

    # As Prefect's harness does: the setting also in the process-wide context, for code that runs in
    # a context copied before this fixture.
    with temporary_settings(updates={PREFECT_API_URL: api}), \
            prefect.context._temporary_global_settings_context(prefect.context.get_settings_context()):
        yield api


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "corpus.duckdb")
    yield s
    s.close()


def make_engine(endpoint: Endpoint, store: Store, *, concurrency: int = 2, timeout_s: float = 60.0,
                retry: RetryPolicy | None = None, run_id: str = "r-test") -> Engine:
    return Engine(endpoint, store, run_id=run_id, concurrency=concurrency, timeout_s=timeout_s,
                  retry=retry or RetryPolicy(max_attempts=4, max_rate_limit_waits=5, base_s=0.05, max_s=0.2))
