"""The engine against a server that fails on demand, over real HTTP."""

import asyncio
import time

import pytest

from longform.engine import Endpoint
from longform.engine import ChatRequest, RequestFailed
from longform.engine.retry import RetryPolicy
from longform.errors import LongformError

from conftest import make_engine
from fault_server import FaultServer, hang, ok, reset, status


@pytest.fixture
def server():
    with FaultServer() as s:
        yield s


def _endpoint(server: FaultServer, model: str | None = "fault-model") -> Endpoint:
    return Endpoint(server.base_url, model, "json_schema", 8192)


def _req(i: int = 0, **kw) -> ChatRequest:
    return ChatRequest(stage="write", messages=[{"role": "user", "content": f"prompt {i}"}], max_tokens=16,
                       seed=1, **kw)


def _run(engine, *requests):
    async def go():
        try:
            await engine.check()
            return await asyncio.gather(*(engine.complete(r) for r in requests), return_exceptions=True)
        finally:
            await engine.close()
    return asyncio.run(go())


def test_5xx_and_connection_resets_are_retried_then_answered(server, store):
    server.push(status(500), status(503), reset())
    engine = make_engine(_endpoint(server), store)
    [answer] = _run(engine, _req())
    assert answer.text == "an answer" and not answer.cached
    assert len(server.received) == 4
    stats = engine.stats["write"]
    assert (stats.requests, stats.attempts) == (1, 4)
    [(attempts, error)] = store.query("select attempts, error from requests")[1]
    assert (attempts, error) == (4, None)


def test_retries_are_bounded_and_the_failure_is_recorded(server, store):
    server.push(*[status(502)] * 10)
    engine = make_engine(_endpoint(server), store, retry=RetryPolicy(max_attempts=3, base_s=0.01, max_s=0.02))
    [failure] = _run(engine, _req())
    assert isinstance(failure, RequestFailed) and failure.reason == "http_502"
    assert len(server.received) == 3  # no retry storm
    [(error,)] = store.query("select error from requests")[1]
    assert error.startswith("http_502")
    assert store.cached_answer(failure.key) is None


def test_client_errors_are_not_retried(server, store):
    server.push(status(400))
    [failure] = _run(make_engine(_endpoint(server), store), _req())
    assert failure.reason == "http_400" and len(server.received) == 1


def test_timeouts_are_retried(server, store):
    server.push(hang(2.0))
    engine = make_engine(_endpoint(server), store, timeout_s=0.5)
    [answer] = _run(engine, _req())
    assert answer.text == "an answer"
    assert engine.stats["write"].attempts == 2


def test_429_honours_retry_after_and_lowers_concurrency(server, store):
    server.push(status(429, {"Retry-After": "1"}))
    engine = make_engine(_endpoint(server), store, concurrency=4)
    started = time.monotonic()
    [answer] = _run(engine, _req())
    assert answer.text == "an answer"
    assert server.arrivals[1] - server.arrivals[0] >= 0.95
    assert engine.limiter.lowest == 2
    assert time.monotonic() - started >= 1.0


def test_concurrency_limit_holds_and_recovers_after_429(server, store):
    server.push(status(429, {"Retry-After": "0"}), *[hang(0.05) for _ in range(40)])
    engine = make_engine(_endpoint(server), store, concurrency=4)
    answers = _run(engine, *[_req(i) for i in range(40)])
    assert all(a.text == "an answer" for a in answers)
    assert server.max_in_flight <= 4
    assert engine.limiter.lowest == 2 and engine.limiter.limit == 4  # back to full load


def test_empty_content_is_a_failure_and_never_cached(server, store):
    server.push(ok(""))
    engine = make_engine(_endpoint(server), store)
    [failure] = _run(engine, _req())
    assert failure.reason == "empty_content"
    [answer] = _run(make_engine(_endpoint(server), store), _req())
    assert answer.text == "an answer" and not answer.cached


def test_answered_requests_are_never_sent_again(server, store):
    server.push(ok("first", finish_reason="length"))
    [first] = _run(make_engine(_endpoint(server), store), _req(0))
    store.flush()
    engine = make_engine(_endpoint(server), store)
    again, other = _run(engine, _req(0), _req(0, sample_index=1))
    assert (again.text, again.finish_reason, again.cached) == ("first", "length", True)
    assert again.key == first.key and other.key != first.key and not other.cached
    assert len(server.received) == 2
    assert engine.stats["write"].cache_hits == 1


def test_response_format_follows_the_dialect(server, store):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    _run(make_engine(_endpoint(server), store), _req(json_schema=schema))
    assert server.received[0]["response_format"] == {"type": "json_schema",
                                                      "json_schema": {"name": "response", "schema": schema}}
    llama = Endpoint(server.base_url, "fault-model", "json_object", 8192)
    _run(make_engine(llama, store), _req(1, json_schema=schema))
    assert server.received[1]["response_format"] == {"type": "json_object", "schema": schema}


def test_check_names_the_url_when_the_endpoint_is_down(store):
    down = Endpoint("http://127.0.0.1:9/v1", "m", "json_schema", 8192)
    with pytest.raises(LongformError, match=r"http://127.0.0.1:9/v1: endpoint not usable"):
        _run(make_engine(down, store, retry=RetryPolicy(max_attempts=1)))


def test_check_resolves_or_refuses_the_model(server, store):
    engine = make_engine(_endpoint(server, model=None), store)
    _run(engine)
    assert engine.model == "fault-model"
    with pytest.raises(LongformError, match="model 'other' not served"):
        _run(make_engine(_endpoint(server, model="other"), store))


def test_api_key_never_reaches_the_store(server, store):
    endpoint = Endpoint(server.base_url, "fault-model", "json_schema", 8192, api_key="sk-secret-123")
    _run(make_engine(endpoint, store), _req())
    store.flush()
    dump = store.query("select * from requests")[1]
    assert "sk-secret-123" not in repr(dump)
    assert "sk-secret-123" not in repr(endpoint)


def test_an_assistant_prefix_is_continued_with_vllms_continue_final_message(server, store):
    engine = make_engine(_endpoint(server), store)
    [answer] = _run(engine, _req(assistant_prefix="It began"))
    assert answer.text == "an answer"
    [body] = server.received
    assert body["messages"][-1] == {"role": "assistant", "content": "It began"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    cannot = make_engine(Endpoint(server.base_url, "fault-model", "json_schema", 8192, continuation="none"), store)
    [refused] = _run(cannot, _req(1, assistant_prefix="It began"))
    assert isinstance(refused, LongformError) and "cannot continue" in str(refused)


class MemoryLedger:
    """The engine's whole view of a database (engine/ledger.py), kept in a dict: no DuckDB."""

    def __init__(self):
        self.answers: dict[str, dict] = {}
        self.recorded: list[dict] = []

    def cached_answer(self, key):
        return self.answers.get(key)

    def add_request(self, row, body):
        self.recorded.append(row)
        if row["error"] is None:
            self.answers[row["key"]] = row


def test_the_engine_needs_only_a_ledger_not_the_store(server):
    ledger = MemoryLedger()
    server.push(status(500), ok("recorded"))
    engine = make_engine(_endpoint(server), ledger)

    async def twice():
        answers = await engine.complete(_req()), await engine.complete(_req())
        await engine.close()
        return answers

    first, again = asyncio.run(twice())
    assert (first.text, first.cached, again.text, again.cached) == ("recorded", False, "recorded", True)
    assert len(server.received) == 2 and [r["attempts"] for r in ledger.recorded] == [2]


def test_an_answer_meant_to_end_at_its_cap_is_not_counted_as_truncated(server):
    server.push(ok("A", finish_reason="length"), ok("the middle of a senten", finish_reason="length"))
    engine = make_engine(_endpoint(server), MemoryLedger())

    async def both() -> None:
        await engine.complete(_req(1, stops_at_cap=True))
        await engine.complete(_req(2))
        await engine.close()

    asyncio.run(both())
    assert engine.stats["write"].truncated == 1
