"""An OpenAI-compatible server on 127.0.0.1 over transformers models, such as a LoRA adapter longform
just trained, so the engine can call them like any other endpoint.

It serves Self-Lengthen's retrained roles between iterations on the embedded endpoint when they
were retrained from a base other than the embedded model (whose adapters llama.cpp serves, see
gguf_lora.py): one process, each served name a model (a base model, or an adapter directory merged
into its base by hf_model.load_causal_lm), one request at a time. It speaks `/v1/models`,
`/v1/chat/completions` (with the model's chat template) and `/v1/completions`; it does not do
structured output, so its endpoint's JSON dialect is "none". On a remote vLLM endpoint the
adapters are loaded into the running server instead (Engine.load_adapters).
"""

from __future__ import annotations

import threading
import time

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from longform.engine import Endpoint
from longform.loopback import LoopbackServer


class NotServed(LookupError):
    """A request for a model this server does not serve."""


class HFServer:
    def __init__(self, models: dict[str, str], *, context_window: int):
        """`models`: served name → what `hf_model.load_causal_lm` loads (id, path, adapter dir, "embedded")."""
        self._specs = models
        self.context_window = context_window
        self._models: dict = {}
        self._lock = threading.Lock()
        self._http: LoopbackServer | None = None

    def __enter__(self) -> "HFServer":
        from longform.models.hf_model import load_causal_lm

        self._models = {name: load_causal_lm(spec) for name, spec in self._specs.items()}
        self._http = LoopbackServer(_app(self), name="longform-hf-server").start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._http is not None:
            self._http.stop()
        self._models.clear()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._http.port}/v1"

    def endpoint(self, default_model: str) -> Endpoint:
        """The engine's view: any served name may be asked for per request."""
        _, tokenizer = self._models[default_model]

        def render(messages: list[dict]) -> str:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return Endpoint(self.base_url, default_model, "none", self.context_window, continuation="completions",
                        render_chat=render)

    def complete(self, body: dict, chat: bool) -> dict:
        from longform.models.hf_model import generate_from

        name = body.get("model")
        if name not in self._models:
            raise NotServed(f"model {name!r} not served (serving: {', '.join(self._models)})")
        lm, tokenizer = self._models[name]
        if chat:
            encoded = tokenizer.apply_chat_template(body["messages"], add_generation_prompt=True,
                                                    return_tensors="pt", return_dict=True)
        else:
            encoded = tokenizer(body["prompt"], return_tensors="pt", add_special_tokens=False)
        prompt_tokens = encoded["input_ids"].shape[1]
        max_new = max(1, min(int(body.get("max_tokens") or 256), self.context_window - prompt_tokens))
        with self._lock:
            text, generated, finish = generate_from(lm, tokenizer, encoded, max_new_tokens=max_new,
                                                    seed=int(body.get("seed") or 0),
                                                    temperature=float(body.get("temperature", 0.7)),
                                                    top_p=float(body.get("top_p", 1.0)))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": generated, "total_tokens": prompt_tokens + generated}
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
            return {"id": "hf", "object": "chat.completion", "created": int(time.time()), "model": name,
                    "choices": [choice], "usage": usage}
        return {"id": "hf", "object": "text_completion", "created": int(time.time()), "model": name,
                "choices": [{"index": 0, "text": text, "finish_reason": finish}], "usage": usage}


def _app(server: HFServer) -> Starlette:
    async def models(_: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": n, "object": "model", "owned_by": "longform"}
                                                        for n in server._models]})

    async def completions(request: Request) -> JSONResponse:
        # Every failure is an answer with a status, as an OpenAI-compatible server gives: the
        # engine fails a 404 or 400 at once and retries a 500 (a dropped connection would be
        # retried as a network error, with nothing said about why).
        try:
            body = await request.json()
            if "response_format" in body:
                raise ValueError("response_format is not supported by this server")
            chat = request.url.path.rstrip("/").endswith("/chat/completions")
            answer = await run_in_threadpool(server.complete, body, chat)  # generation blocks: off the event loop
        except NotServed as e:
            return JSONResponse({"error": {"message": str(e), "type": "NotFoundError"}}, status_code=404)
        except (KeyError, ValueError, TypeError) as e:  # a malformed body
            return JSONResponse({"error": {"message": f"bad request: {type(e).__name__}: {e}",
                                           "type": "BadRequestError"}}, status_code=400)
        except Exception as e:  # a failure in generation: the message goes back, the server stays up
            return JSONResponse({"error": {"message": f"{type(e).__name__}: {e}", "type": "InternalServerError"}},
                                status_code=500)
        return JSONResponse(answer)

    return Starlette(routes=[Route("/v1/models", models), Route("/v1/chat/completions", completions, methods=["POST"]),
                             Route("/v1/completions", completions, methods=["POST"])])
