"""A server process that longform starts on loopback and owns: it never outlives longform.

The embedded llama.cpp server and the local Prefect server are both started this way. The child
runs in its own session, so a Ctrl-C in the terminal reaches longform first (and answers in flight
can still arrive); on Linux it also gets SIGTERM from the kernel when longform dies in any way,
`kill -9` included (PR_SET_PDEATHSIG), so a crash-looping build does not pile up orphans.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque

import httpx

from longform.errors import LongformError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class OwnedServer:
    """`command` (with `{port}` filled in, in its arguments and `env`) on a free loopback port, ready
    once `ready_path` answers 200.

    Start it from the main thread: the kernel's parent-death signal fires when the *thread* that
    started the child ends.
    """

    def __init__(self, name: str, command: list[str], *, ready_path: str, start_timeout_s: float,
                 env: dict[str, str] | None = None, log_path: str | None = None):
        self.name = name
        self.command = command
        self.ready_path = ready_path
        self.start_timeout_s = start_timeout_s
        self.env = env
        # Where its output goes: a temporary file (read back for errors) unless a path is given.
        self.log_path = log_path
        self.port = 0
        self.pid: int | None = None
        self._proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "OwnedServer":
        self.port = free_port()
        self._log = open(self.log_path, "ab+") if self.log_path else tempfile.TemporaryFile()
        self._proc = subprocess.Popen([part.replace("{port}", str(self.port)) for part in self.command], stdout=self._log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env={k: v.replace("{port}", str(self.port)) for k, v in self.env.items()}
                                      if self.env is not None else None,
                                      preexec_fn=_die_with_parent)
        self.pid = self._proc.pid
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise LongformError(f"{self.name} exited with code {self._proc.returncode}: {self._tail()}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise LongformError(f"{self.name} did not answer {self.url + self.ready_path} within"
                            f" {self.start_timeout_s:.0f}s: {self._tail()}")

    def _tail(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        lines = deque((line.decode("utf-8", "replace").strip() for line in self._log), maxlen=3)
        return " | ".join(line for line in lines if line) or "no output"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "OwnedServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
