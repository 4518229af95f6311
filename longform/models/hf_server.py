"""An OpenAI-compatible server on 127.0.0.1 over transformers models, such as a LoRA adapter longform
just trained, so the engine can call them like any other endpoint.

It is what serves Self-Lengthen's retrained roles between iterations on the embedded endpoint: one
process, each served name a model (a base model or an adapter directory, loaded through
transformers' PEFT integration), one request at a time. It speaks `/v1/models`,
`/v1/chat/completions` (with the model's chat template) and `/v1/completions`; it does not do
structured output, so its endpoint's JSON dialect is "none". On a remote vLLM endpoint the
adapters are loaded into the running server instead (Engine.load_adapters).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from longform.engine import Endpoint


class NotServed(LookupError):
    """A request for a model this server does not serve."""


class HFServer:
    def __init__(self, models: dict[str, str], *, context_window: int):
        """`models`: served name → what `hf_model.load_causal_lm` loads (id, path, adapter dir, "embedded")."""
        self._specs = models
        self.context_window = context_window
        self._models: dict = {}
        self._lock = threading.Lock()
        self._http: ThreadingHTTPServer | None = None

    def __enter__(self) -> "HFServer":
        from longform.models.hf_model import load_causal_lm

        self._models = {name: load_causal_lm(spec) for name, spec in self._specs.items()}
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, name="longform-hf-server", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        self._models.clear()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

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


def _handler(server: HFServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, code: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, {"object": "list", "data": [{"id": n, "object": "model", "owned_by": "longform"}
                                                            for n in server._models]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            path = self.path.rstrip("/")
            if not path.endswith(("/chat/completions", "/completions")):
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            # Every failure is an answer with a status, as an OpenAI-compatible server gives: the
            # engine fails a 404 or 400 at once and retries a 500 (a dropped connection would be
            # retried as a network error, with nothing said about why).
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                if "response_format" in body:
                    raise ValueError("response_format is not supported by this server")
                answer = server.complete(body, chat=path.endswith("/chat/completions"))
            except NotServed as e:
                self._send(404, {"error": {"message": str(e), "type": "NotFoundError"}})
            except (KeyError, ValueError, TypeError) as e:  # a malformed body
                self._send(400, {"error": {"message": f"bad request: {type(e).__name__}: {e}", "type": "BadRequestError"}})
            except Exception as e:  # a failure in generation: the message goes back, the server stays up
                self._send(500, {"error": {"message": f"{type(e).__name__}: {e}", "type": "InternalServerError"}})
            else:
                self._send(200, answer)

    return Handler
