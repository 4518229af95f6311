"""Resolving the configured endpoint into something the engine can call.

Embedded or remote, the engine sees the same thing: an OpenAI-compatible base URL, a model name,
a key and the structured-output dialect the server speaks. The key is read from the environment
here and lives only in memory.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from longform.config import EndpointConfig
from longform.errors import LongformError


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    model: str | None  # None: ask the server which model it serves
    dialect: str
    context_window: int
    api_key: str = field(default="not-needed", repr=False)


@contextmanager
def open_endpoint(cfg: EndpointConfig) -> Iterator[Endpoint]:
    if cfg.kind == "embedded":
        from longform.embedded import MODEL_ALIAS, EmbeddedServer

        with EmbeddedServer(context_window=cfg.context_window, n_threads=cfg.n_threads) as server:
            yield Endpoint(server.base_url, cfg.model or MODEL_ALIAS, cfg.dialect, cfg.context_window)
        return
    api_key = "not-needed"
    if cfg.api_key_env:
        api_key = os.environ.get(cfg.api_key_env, "")
        if not api_key:
            raise LongformError(f"[endpoint] api_key_env: environment variable {cfg.api_key_env} is not set")
    yield Endpoint(cfg.base_url, cfg.model, cfg.dialect, cfg.context_window, api_key)
