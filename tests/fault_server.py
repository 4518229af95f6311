"""An OpenAI-compatible HTTP server that fails on demand.

The real embedded server cannot be made to answer 503 or hang, so engine tests talk to this one
over real HTTP. Each request takes the next scripted behaviour; when the script is empty it
answers normally. Every request body it receives is kept, so tests can count what was sent.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections import deque
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


def ok(text: str = "an answer", finish_reason: str = "stop", logprobs: list | None = None) -> dict:
    """An answer; `logprobs` [(token, logprob, {alternative: logprob}), …] is sent when asked for."""
    return {"kind": "ok", "text": text, "finish_reason": finish_reason, "logprobs": logprobs}


def model() -> dict:
    """Answer as the realistic stand-in model would (see writer_answer)."""
    return {"kind": "model"}


def status(code: int, headers: dict | None = None) -> dict:
    return {"kind": "status", "code": code, "headers": headers or {}}


def hang(seconds: float) -> dict:
    return {"kind": "hang", "seconds": seconds}


def reset() -> dict:
    return {"kind": "reset"}


_VOCAB = ["river", "stone", "light", "harbour", "garden", "letter", "window", "market", "bridge", "autumn",
          "lantern", "meadow", "signal", "winter", "orchard", "compass"]


def writer_answer(body: dict) -> dict:
    """A deterministic stand-in for a model: a 3-step JSON plan when JSON is asked for, otherwise
    text whose words are a function of the prompt, as long as `max_tokens` allows (at most 60)."""
    if "response_format" in body:
        plan = {"paragraphs": [{"main_point": f"point {i}", "word_count": 100} for i in range(3)]}
        return ok(json.dumps(plan))
    digest = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).digest()
    n = min(int(body.get("max_tokens", 40)), 60)
    return ok(" ".join(_VOCAB[digest[i % len(digest)] % len(_VOCAB)] for i in range(n)) + ".")


def distinct_words(body: dict, *, vary: int = 0) -> dict:
    """As many distinct words as `max_tokens` allows (at most 80; `vary` fewer at most, by a hash
    of the request), ending a sentence: answers that pass every text filter (no repeated n-gram,
    no meta words) and grow with their budget."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    digest = hashlib.sha256(repr(body.get("messages") or body.get("prompt")).encode()).digest()
    seed = "".join(letters[c % 26] for c in digest[:5])
    n = max(1, min(int(body.get("max_tokens", 40)), 80) - (digest[5] % (vary + 1)))
    return ok(" ".join(seed + letters[i // 26] + letters[i % 26] for i in range(n)) + ".")


class FaultServer:
    """An OpenAI-compatible server that fails on demand. Hand-written on http.server rather than
    Starlette (which longform's own loopback services use): it must cut a connection mid-request
    (`reset`, `kill`), and an ASGI app cannot reach the socket it answers on."""

    def __init__(self, model: str = "fault-model", *, realistic: bool = False, delay_s: float = 0.0,
                 lora: bool = False):
        """`lora`: speak vLLM's runtime LoRA API (VLLM_ALLOW_RUNTIME_LORA_UPDATING=True,
        --enable-lora): /v1/load_lora_adapter loads an adapter directory under a name, /v1/models
        lists it, and a request for a model that is neither the base nor loaded is a 404, as vLLM answers."""
        self.model = model
        self.lora = lora
        self.adapters: dict[str, str] = {}
        self.load_calls: list[dict] = []
        self.realistic = realistic
        self.delay_s = delay_s
        self.script: deque[dict] = deque()
        # What to do when the script is empty (None: answer); e.g. status(500) for a broken server.
        self.fallback: dict | None = None
        # Or a function of the request body that says what to answer (a deterministic stand-in judge).
        self.answer: Callable[[dict], dict] | None = None
        self.dead = False
        self.received: list[dict] = []
        self.authorization: list[str] = []
        self.arrivals: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def push(self, *behaviours: dict) -> None:
        self.script.extend(behaviours)

    def __enter__(self) -> "FaultServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.dead:
            self._httpd.shutdown()
            self._httpd.server_close()

    def kill(self) -> None:
        """Die as a crashed server does: requests in flight are cut off, new connections refused."""
        self.dead = True
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next(self, body: dict, authorization: str) -> dict:
        with self._lock:
            self.received.append(body)
            self.authorization.append(authorization)
            self.arrivals.append(time.monotonic())
            if self.script:
                return self.script.popleft()
            if self.fallback is not None:
                return self.fallback
        if self.answer is not None:
            return self.answer(body)
        return writer_answer(body) if self.realistic else ok()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model", "created": 0,
                                                                 "owned_by": "test"}
                                                                for m in [server.model, *server.adapters]]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path.rstrip("/").endswith("/load_lora_adapter"):
                    self._load_adapter(body)
                    return
                if server.lora and body.get("model") not in (server.model, *server.adapters):
                    self._send(404, {"object": "error", "message": f"The model `{body.get('model')}` does not exist.",
                                     "type": "NotFoundError", "code": 404})
                    return
                behaviour = server._next(body, self.headers.get("Authorization", ""))
                if server.delay_s:
                    time.sleep(server.delay_s)
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._act(body, behaviour)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _load_adapter(self, body: dict) -> None:
                server.load_calls.append(body)
                name, path = body.get("lora_name"), body.get("lora_path", "")
                if not server.lora:
                    self._send(404, {"detail": "Not Found"})  # vLLM without runtime LoRA updating
                elif name in server.adapters:
                    self._send(400, {"object": "error", "message": f"The lora adapter '{name}' has already been"
                                     " loaded.", "type": "InvalidUserInput", "code": 400})
                elif not (Path(path) / "adapter_config.json").exists():
                    self._send(400, {"object": "error", "message": f"Loading lora {name} failed: No adapter found for"
                                     f" {path}", "type": "BadRequestError", "code": 400})
                else:
                    server.adapters[name] = path
                    data = f"Success: LoRA adapter '{name}' added successfully.".encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

            def _act(self, body: dict, b: dict) -> None:
                if b["kind"] == "model":
                    b = writer_answer(body)
                kind = b["kind"]
                if kind == "reset" or server.dead:
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if kind == "hang":
                    time.sleep(b["seconds"])
                    b = ok()
                    kind = "ok"
                if kind == "status":
                    self._send(b["code"], {"error": {"message": f"injected {b['code']}", "type": "test"}},
                               b["headers"])
                    return
                text = b["text"]
                choice = {"index": 0, "finish_reason": b["finish_reason"],
                          "message": {"role": "assistant", "content": text}}
                if body.get("logprobs") and b.get("logprobs") is not None:
                    choice["logprobs"] = {"content": [
                        {"token": token, "logprob": lp, "bytes": None,
                         "top_logprobs": [{"token": t, "logprob": v, "bytes": None} for t, v in top.items()]}
                        for token, lp, top in b["logprobs"]]}
                self._send(200, {
                    "id": "cmpl-test", "object": "chat.completion", "created": 0, "model": body.get("model"),
                    "choices": [choice],
                    "usage": {"prompt_tokens": 10, "completion_tokens": b.get("tokens_out") or max(1, len(text.split())),
                              "total_tokens": 10 + (b.get("tokens_out") or max(1, len(text.split())))},
                })

        return Handler
