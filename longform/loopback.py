"""A Starlette app served on 127.0.0.1 by uvicorn, on a thread of this process: how longform's
in-process HTTP services run (the writer's read channel, the server over transformers models).
Starlette parses requests and turns exceptions into status codes; uvicorn runs the connections."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from starlette.applications import Starlette


class LoopbackServer:
    def __init__(self, app: Starlette, *, name: str):
        # Bound here, before the thread starts, so the port is known (and ours) at once.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        # No lifespan (the apps need no start-up) and no access log (a line per request).
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name=name, daemon=True)

    def start(self, timeout_s: float = 30.0) -> "LoopbackServer":
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self._thread.name}: the loopback server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
