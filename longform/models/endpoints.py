"""Resolving the configured endpoints into what the engine calls (`Endpoint`, engine/endpoint.py):
starting the embedded server, reading a key from the environment.

Embedded or remote, the engine sees the same thing: an OpenAI-compatible base URL, a model name,
a key and the structured-output dialect the server speaks. The key is read from the environment
here and lives only in memory.
"""

from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager
from typing import Iterator

from longform.config import EndpointConfig
from longform.engine.endpoint import Endpoint
from longform.errors import LongformError


@contextmanager
def open_endpoint(cfg: EndpointConfig) -> Iterator[Endpoint]:
    if cfg.kind == "embedded":
        from longform.models.embedded import MODEL_ALIAS, EmbeddedServer

        with EmbeddedServer(context_window=cfg.context_window, n_threads=cfg.n_threads) as server:
            yield server.endpoint(cfg.model or MODEL_ALIAS, cfg.dialect, concurrency=cfg.max_concurrency,
                                  weight=cfg.weight)
        return
    api_key = "not-needed"
    if cfg.api_key_env:
        api_key = os.environ.get(cfg.api_key_env, "")
        if not api_key:
            raise LongformError(f"[endpoint] api_key_env: environment variable {cfg.api_key_env} is not set")
    yield Endpoint(cfg.base_url, cfg.model, cfg.dialect, cfg.context_window, api_key,
                   continuation=cfg.continuation, concurrency=cfg.max_concurrency, weight=cfg.weight)


@contextmanager
def open_pool(cfgs: list[EndpointConfig]) -> Iterator[list[Endpoint]]:
    """Every endpoint of a pool, open together (the embedded one started), closed together."""
    with ExitStack() as stack:
        yield [stack.enter_context(open_endpoint(cfg)) for cfg in cfgs]
