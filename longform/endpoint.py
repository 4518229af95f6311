"""Resolving the configured endpoint into something the engine can call.

Embedded or remote, the engine sees the same thing: an OpenAI-compatible base URL, a model name,
a key and the structured-output dialect the server speaks. The key is read from the environment
here and lives only in memory.
"""

from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

from longform.config import EndpointConfig
from longform.errors import LongformError


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    model: str | None  # None: ask the server which model it serves
    dialect: str
    context_window: int
    api_key: str = field(default="not-needed", repr=False)
    # How a request continues an assistant prefix (see Engine.body): "continue_final_message"
    # (vLLM, SGLang: a chat request whose last message is the assistant's), "completions" (the
    # prompt is rendered here with the model's chat template and sent to /v1/completions), or
    # "none". `render_chat` renders messages up to the assistant's turn, for "completions".
    continuation: str = "continue_final_message"
    render_chat: Callable[[list[dict]], str] | None = field(default=None, repr=False, compare=False)
    # Requests in flight at most (None: the engine's default), and its share of new samples
    # relative to the pool's other endpoints (engine/router.py).
    concurrency: int | None = None
    weight: float = 1.0


@contextmanager
def open_endpoint(cfg: EndpointConfig) -> Iterator[Endpoint]:
    if cfg.kind == "embedded":
        from longform.embedded import MODEL_ALIAS, EmbeddedServer, chat_renderer

        with EmbeddedServer(context_window=cfg.context_window, n_threads=cfg.n_threads) as server:
            # llama-cpp-python's chat endpoint cannot continue an assistant message: it closes it
            # and opens a new turn. Its completions endpoint with the chat template applied here can.
            yield Endpoint(server.base_url, cfg.model or MODEL_ALIAS, cfg.dialect, cfg.context_window,
                           continuation="completions", render_chat=chat_renderer(server.model_path),
                           concurrency=cfg.max_concurrency, weight=cfg.weight)
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
