"""Self-Lengthen's retrained roles on a remote (vLLM) endpoint: each adapter is loaded into the
running server through vLLM's runtime LoRA API and the next iteration is written through it. The
server is the stand-in taught that API (fault_server.py, `lora=True`), over real HTTP."""

import asyncio
from pathlib import Path

import pytest

from flows.build import build
from longform.config import Settings
from longform.engine import Endpoint
from longform.errors import LongformError

from conftest import make_engine
from fault_server import FaultServer, distinct_words
from helpers import remote_build, rows


def sl_config(tmp_path: Path, base_url: str) -> Path:
    config = remote_build(tmp_path, base_url, 2, name="sl-vllm", extra="")
    config.write_text(config.read_text() + """
[writers]
enabled = ["self_lengthen"]

[self_lengthen]
rounds = 1
min_growth = 1.1
generator_max_tokens = 16
round_max_tokens = 32
iterations = 2
train_model = "embedded"
train_max_steps = 1

""")
    return config


@pytest.mark.slow
def test_retrained_roles_are_loaded_into_the_running_vllm_server_and_write_the_next_iteration(prefect, tmp_path):
    with FaultServer(lora=True) as server:
        server.answer = distinct_words
        config = sl_config(tmp_path, server.base_url)
        summary = asyncio.run(build(config=str(config)))
        db = tmp_path / "corpus.duckdb"

        # Both roles' adapters, trained here, were loaded by name from their absolute directories.
        assert len(server.adapters) == 2
        for name, path in server.adapters.items():
            assert name.startswith(("generator-iter1-", "extender-iter1-"))
            assert Path(path).is_absolute() and (Path(path) / "adapter_config.json").exists()
        # Iteration 2 was written through them, on this server (no local transformers server).
        asked = {b["model"] for b in server.received}
        assert asked == {"fault-model", *server.adapters}
        second = rows(db, "select distinct s.model from samples s join lengthen_steps l using (sample_id)"
                          " where l.iteration = 2")
        assert len(second) == 1 and second[0][0].startswith("generator=generator-iter1-")
        assert rows(db, "select count(*) from samples") == [(4,)]  # two prompts, two iterations, all kept
        assert {e for (e,) in rows(db, "select distinct endpoint from requests")} == {server.base_url}

        # The same command again: nothing is sent or retrained; loading the same names is harmless.
        loads = len(server.load_calls)
        again = asyncio.run(build(config=str(config)))
        assert again["requests_sent"] == 0 and summary["requests_sent"] > 0
        assert len(server.load_calls) == loads + 2 and len(server.adapters) == 2
        assert rows(db, "select count(*) from train_runs") == [(2,)]


def _load(server: FaultServer, store, adapters: dict[str, str]) -> None:
    engine = make_engine(Endpoint(server.base_url, "fault-model", "json_schema", 8192), store)

    async def go():
        try:
            await engine.load_adapters(adapters)
        finally:
            await engine.close()
    asyncio.run(go())


def test_a_server_without_runtime_lora_is_one_line_naming_what_to_turn_on(store, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "adapter_config.json").write_text("{}")
    with FaultServer() as server:
        with pytest.raises(LongformError, match=r"could not load LoRA adapter 'g-1'.*HTTP 404.*--enable-lora"
                                                r".*VLLM_ALLOW_RUNTIME_LORA_UPDATING"):
            _load(server, store, {"g-1": str(tmp_path / "a")})
    with FaultServer(lora=True) as server:
        with pytest.raises(LongformError, match=r"'g-2'.*HTTP 400.*No adapter found"):
            _load(server, store, {"g-2": str(tmp_path / "missing")})
        _load(server, store, {"g-1": str(tmp_path / "a")})
        _load(server, store, {"g-1": str(tmp_path / "a")})  # already loaded: fine
        assert server.adapters == {"g-1": str(tmp_path / "a")}


def test_the_roles_are_retrained_from_the_endpoints_model_unless_told_otherwise():
    remote = {"endpoint": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "org/base-7b"}}
    assert Settings.model_validate(remote).lengthen_base == "org/base-7b"
    assert Settings().lengthen_base == "embedded"
    told = {**remote, "self_lengthen": {"train_model": "/models/base"}}
    assert Settings.model_validate(told).lengthen_base == "/models/base"
    unnamed = {"endpoint": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}}
    with pytest.raises(LongformError, match=r"\[endpoint\] model is not set"):
        Settings.model_validate(unnamed).lengthen_base
