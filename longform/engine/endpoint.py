"""An endpoint as the engine sees it: embedded or remote, an OpenAI-compatible base URL, a model
name, a key and the structured-output dialect the server speaks (resolved from the config by
longform/models/endpoints.py). The key lives only in memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


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
