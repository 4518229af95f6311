"""The real embedded llama.cpp server, through the engine."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from longform.engine import ChatRequest
from writers.plan import PLAN_SCHEMA, parse_plan

from conftest import make_engine

pytestmark = pytest.mark.embedded  # the model's weights, in llama.cpp or transformers


def _ask(engine, *requests):
    async def go():
        try:
            await engine.check()
            return [await engine.complete(r) for r in requests]
        finally:
            await engine.close()
    return asyncio.run(go())


def test_chat_with_small_max_tokens_and_a_json_plan(embedded, store):
    engine = make_engine(embedded, store)
    chat = ChatRequest(stage="t", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=8, seed=3)
    # The plan schema, bounded so that any answer the grammar allows ends within max_tokens.
    items = PLAN_SCHEMA["properties"]["paragraphs"]["items"]
    bounded = {**PLAN_SCHEMA, "properties": {"paragraphs": {
        "type": "array", "minItems": 1, "maxItems": 2,
        "items": {**items, "properties": {"main_point": {"type": "string", "maxLength": 40},
                                          "word_count": {"type": "integer", "enum": [100, 200, 300]}}}}}}
    plan = ChatRequest(stage="plan", messages=[{"role": "user", "content": "Plan a 300-word essay on tea as JSON."}],
                       max_tokens=200, seed=3, json_schema=bounded)
    answer, planned = _ask(engine, chat, plan)
    assert answer.text.strip() and 0 < answer.tokens_out <= 8
    assert answer.finish_reason in ("stop", "length")
    # The schema is enforced by llama.cpp's grammar: the answer is JSON from its first character.
    assert planned.text.lstrip().startswith("{")
    assert planned.finish_reason == "stop", planned
    steps, source = parse_plan(planned.text)
    assert source == "json" and 1 <= len(steps) <= 2 and json.loads(planned.text, strict=False)["paragraphs"]


def test_a_repeated_request_is_answered_from_the_cache(embedded, store):
    request = ChatRequest(stage="t", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, seed=1)
    [first] = _ask(make_engine(embedded, store), request)
    engine = make_engine(embedded, store)
    [second] = _ask(engine, request)
    assert second.cached and second.text == first.text and second.key == first.key
    assert engine.stats["t"].requests == 0 and engine.stats["t"].cache_hits == 1


_CHILD = """
import sys, time
from longform.models.embedded import EmbeddedServer
server = EmbeddedServer().start()
print(server.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def test_server_stops_on_exit_and_dies_with_a_killed_parent():
    from longform.models.embedded import EmbeddedServer

    with EmbeddedServer() as server:
        pid = server.pid
        assert _alive(pid)
    assert not _alive(pid)

    parent = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    assert _alive(child_pid)
    parent.send_signal(signal.SIGKILL)  # no cleanup code runs
    parent.wait()
    deadline = time.monotonic() + 15
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(child_pid), "embedded server outlived a killed longform"


def test_continuing_an_assistant_prefix(embedded, store):
    engine = make_engine(embedded, store)
    prefix = "The first six prime numbers are 2, 3, 5,"
    answer, = _ask(engine, ChatRequest(stage="continue", max_tokens=12, temperature=0.0, assistant_prefix=prefix,
                                       messages=[{"role": "user", "content": "List the first six prime numbers."}]))
    # What comes back follows the prefix; it does not start a new answer.
    assert "7" in answer.text and not answer.text.lstrip().startswith("The first")
    store.flush()
    [(request_id,)] = store.query("select request_id from requests where stage = 'continue'")[1]
    sent = store.request_document(request_id)
    assert sent["prompt"].endswith("<|im_start|>assistant\n" + prefix) and "messages" not in sent


def test_the_servers_logprobs_are_llama_cpps_own_computed_row_by_row():
    """longform/models/llama_server.py: the same log-softmax, for the rows read, as Python floats."""
    import numpy as np
    from llama_cpp import Llama

    from longform.models import llama_server

    logits = np.random.default_rng(0).normal(size=(40, 300)).astype(np.single)
    whole = llama_server._log_softmax(logits)
    rows = Llama.logits_to_logprobs(logits)[35:]
    assert Llama.logits_to_logprobs is not llama_server._log_softmax and len(rows) == 5
    got = list(rows)
    assert all(isinstance(r, list) and isinstance(r[0], float) for r in got)
    assert np.allclose(np.array(got), whole[35:], atol=1e-6)
    assert np.allclose(Llama.logits_to_logprobs(logits[0]), whole[0], atol=1e-6)   # one row: unchanged


def test_the_server_computes_no_prompt_logits_and_answers_the_same(monkeypatch):
    """longform/models/llama_server.py's eval: logits for each batch's last token only, and its top
    alternatives without sorting the vocabulary, so the same text and the same answer
    log-probabilities as llama-cpp-python's own eval and sort; `echo` with `logprobs`, which would
    read prompt rows, and more alternatives than the loop is given, are refused."""
    import builtins
    import types

    import llama_cpp.llama
    import numpy as np
    from llama_cpp import Llama

    from longform.models import llama_server
    from longform.models.embedded import gguf_path

    llm = Llama(model_path=str(gguf_path()), n_ctx=2048, n_threads=1, n_batch=64, logits_all=True, verbose=False)
    prompt = "The old museum by the river opened in 1911, and " * 12 + "the old museum by the"

    def ask(**extra):
        llm.reset()
        out = llm.create_completion(prompt, max_tokens=4, temperature=0.0, **{"logprobs": 3, **extra})["choices"][0]
        return out["text"], out["logprobs"]["token_logprobs"], out["logprobs"]["top_logprobs"]

    assert Llama.eval is llama_server.eval_last_rows and llama_cpp.llama.sorted is llama_server.sorted_top
    text, logprobs, top = ask(logprobs=20)
    llm.eval = types.MethodType(llama_server._eval_every_row, llm)   # upstream: every row computed
    monkeypatch.setattr(llama_cpp.llama, "sorted", builtins.sorted)  # and sorted
    text_upstream, logprobs_upstream, top_upstream = ask(logprobs=20)
    assert text == text_upstream and len(logprobs) == 4
    assert np.allclose(logprobs, logprobs_upstream, atol=1e-4)
    assert [list(t) for t in top] == [list(t) for t in top_upstream] and len(top[0]) > 10
    with pytest.raises(ValueError, match="echo with logprobs"):
        ask(echo=True)
    with pytest.raises(ValueError, match="logprobs over 20"):
        ask(logprobs=21)


def test_the_top_alternatives_are_what_a_full_sort_gives():
    """sorted_top on a row with ties at, above and below its 20th value: the first 20 pairs of
    Python's own sort (ties by the higher token id); anything else is sorted as usual."""
    import numpy as np

    from longform.models.llama_server import TOP_LOGPROBS_MAX, _Row, sorted_top

    values = np.random.default_rng(0).integers(-40, 0, size=5000).astype(np.float32) / 4   # many ties
    row = _Row(values)
    full = sorted(zip(list(row), range(len(row))), reverse=True)
    assert sorted_top(zip(row, range(len(row))), reverse=True) == full[:TOP_LOGPROBS_MAX]
    assert sorted_top(zip(row, range(len(row)))) == sorted(zip(list(row), range(len(row))))   # ascending: as usual
    started = iter(row)
    next(started)
    assert sorted_top(zip(started, range(len(row) - 1)), reverse=True) == \
        sorted(zip(list(row)[1:], range(len(row) - 1)), reverse=True)                          # not at its start
    assert sorted_top([3, 1, 2], reverse=True) == [3, 2, 1]


def test_flash_attention_where_it_pays(tmp_path, monkeypatch):
    """On by default, off on x86 without AVX-512 (slower decoding there, longform/models/embedded.py);
    LONGFORM_FLASH_ATTN decides instead."""
    from longform.models import embedded

    avx2, avx512 = tmp_path / "avx2", tmp_path / "avx512"
    avx2.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma f16c\n")
    avx512.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 avx512f avx512_bf16\n")
    monkeypatch.delenv("LONGFORM_FLASH_ATTN", raising=False)
    monkeypatch.setattr(embedded.platform, "machine", lambda: "x86_64")
    assert embedded.flash_attention(str(avx2)) is False and embedded.flash_attention(str(avx512)) is True
    monkeypatch.setenv("LONGFORM_FLASH_ATTN", "1")
    assert embedded.flash_attention(str(avx2)) is True
    monkeypatch.setenv("LONGFORM_FLASH_ATTN", "0")
    assert embedded.flash_attention(str(avx512)) is False
    monkeypatch.delenv("LONGFORM_FLASH_ATTN")
    monkeypatch.setattr(embedded.platform, "machine", lambda: "arm64")
    assert embedded.flash_attention(str(avx2)) is True
