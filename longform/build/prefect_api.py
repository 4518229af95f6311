"""The Prefect API a command talks to: the one configured, or a local server longform owns.

Without a configured API, Prefect would start its own "ephemeral" server: a uvicorn subprocess
stopped by an atexit hook, which `kill -9` skips, so every killed build left one running (about
200 MB each). Here longform starts that same server itself, as an `OwnedServer` that dies with
it, and points Prefect at it. It must run before Prefect is imported: Prefect reads its settings
when it is imported.
"""

from __future__ import annotations

import os
import sys
import tomllib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from longform.models.owned_process import OwnedServer


def configured_api_url() -> str | None:
    """PREFECT_API_URL from the environment or, as Prefect itself would, from the active profile."""
    if url := os.environ.get("PREFECT_API_URL"):
        return url
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    try:
        profiles = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active", "ephemeral")
    return profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL") or None


@contextmanager
def prefect_api() -> Iterator[str]:
    """Yield the API URL; with none configured, a local Prefect server runs for the duration.
    Either way Prefect's queued events and logs are sent on the way out, whether the work inside
    succeeded or failed, while the server is still up."""
    if url := configured_api_url():
        try:
            yield url
        finally:
            _drain_prefect()
        return
    timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"))
    server = OwnedServer("local Prefect server", [
        sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
        "--host", "127.0.0.1", "--port", "{port}", "--log-level", "error", "--lifespan", "on",
    ], ready_path="/api/health", start_timeout_s=timeout,
        # As Prefect starts its own: no UI, no background services (an "ephemeral" server).
        env={**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
             "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    with server:
        os.environ["PREFECT_API_URL"] = url = f"{server.url}/api"
        try:
            yield url
        finally:
            _drain_prefect()
            os.environ.pop("PREFECT_API_URL", None)


def _drain_prefect() -> None:
    """Left to Prefect's exit hook, its queued events would be sent after the server stopped, and it
    would warn after the command's last line (a one-line error included)."""
    if "prefect" not in sys.modules:
        return  # nothing of Prefect ran
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (EventsWorker, APILogWorker):
        worker.drain_all(timeout=10)
