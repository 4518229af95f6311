"""What OpenAI-compatible servers differ in, on the wire: how structured output is asked for, how
an assistant message is continued, and how answers, usage and log-probabilities come back."""

from __future__ import annotations

import json
from typing import Any

import openai

from longform.engine.endpoint import Endpoint
from longform.engine.messages import ChatRequest, TokenLogprobs
from longform.errors import LongformError


def request_body(endpoint: Endpoint, model: str | None, req: ChatRequest) -> dict[str, Any]:
    """The body sent for `req` (and hashed into its cache key)."""
    body: dict[str, Any] = {
        "model": req.model or model,
        "messages": req.messages,
        "max_tokens": req.max_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
    }
    if req.assistant_prefix is not None:
        mode = endpoint.continuation
        if mode == "completions":
            body["prompt"] = endpoint.render_chat(req.messages) + req.assistant_prefix
            del body["messages"]
        elif mode == "continue_final_message":
            body["messages"] = [*req.messages, {"role": "assistant", "content": req.assistant_prefix}]
            body["extra_body"] = {"continue_final_message": True, "add_generation_prompt": False}
        else:
            raise LongformError(f"{endpoint.base_url}: this endpoint cannot continue an assistant"
                                " message ([endpoint] continuation = \"none\")")
    if req.seed is not None:
        body["seed"] = req.seed
    if req.top_logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = req.top_logprobs
    if req.json_schema is not None and endpoint.dialect != "none":
        body["response_format"] = _response_format(endpoint.dialect, req.json_schema)
    return body


def parse_answer(body: dict[str, Any], data: dict[str, Any]) -> tuple[str, str | None, int, int, list | None]:
    """(text, finish reason, prompt tokens, generated tokens, log-probabilities) of a server's JSON
    answer to `body`, chat or plain completion."""
    choices = data.get("choices") or []
    choice = choices[0] if choices else {}
    text = (choice.get("text") if "prompt" in body else (choice.get("message") or {}).get("content")) or ""
    usage = data.get("usage") or {}
    logprobs = token_logprobs(choice.get("logprobs")) if body.get("logprobs") else None
    return (text, choice.get("finish_reason"), usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0,
            logprobs)


def token_logprobs(raw: Any) -> list[TokenLogprobs] | None:
    """OpenAI's chat `logprobs.content`, as (token, logprob, {alternative: logprob}); None when the
    server sent none (llama.cpp without logits_all, a server without the option)."""
    content = raw.get("content") if isinstance(raw, dict) else None
    if not content:
        return None
    out = []
    for item in content:
        top: dict[str, float] = {}
        for alt in item.get("top_logprobs") or []:
            # Two alternatives can decode to the same text; keep the likelier.
            top[alt["token"]] = max(top.get(alt["token"], float("-inf")), float(alt["logprob"]))
        out.append((item.get("token", ""), float(item.get("logprob", 0.0)), top))
    return out


def logprobs_from_row(value: str | None) -> list[TokenLogprobs] | None:
    if value is None:
        return None
    return [(token, lp, top) for token, lp, top in json.loads(value)]


def _response_format(dialect: str, schema: dict[str, Any]) -> dict[str, Any]:
    if dialect == "json_object":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}


def describe(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        message = exc.message if isinstance(exc.message, str) else str(exc)
        return f"HTTP {exc.status_code}: {message.strip().splitlines()[0][:300] if message.strip() else ''}"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__
