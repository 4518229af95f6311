"""Real throughput on the embedded llama.cpp server: longform's engine vs a minimal client loop.

The same requests (greedy, fixed seed, so both sides generate the same tokens) go through the
engine (cache lookup, adaptive limiter, retries, a DuckDB row per request) and through a plain
httpx loop, alternating direct, engine, direct, engine, so drift in the machine's speed hits both.
Goal (issue 8): the engine's generated tokens/s ≥ 0.90 × the direct loop's.

    python benchmarks/embedded_throughput.py [--requests 8] [--max-tokens 96]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
import sys

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from longform.models.embedded import MODEL_ALIAS, EmbeddedServer  # noqa: E402
from longform.engine import Endpoint  # noqa: E402
from longform.engine import ChatRequest, Engine  # noqa: E402
from longform.engine.retry import RetryPolicy  # noqa: E402
from longform.store import Store  # noqa: E402

TOPICS = ["lighthouses", "tidal energy", "urban beekeeping", "coral reefs", "early computer networks",
          "medieval trade fairs", "volcanic islands", "a village library", "container shipping", "soil microbes"]


def messages(i: int) -> list[dict]:
    return [{"role": "user", "content": f"Write a detailed essay about {TOPICS[i % len(TOPICS)]}."}]


def direct(base_url: str, n: int, max_tokens: int) -> tuple[float, int]:
    tokens = 0
    with httpx.Client(base_url=base_url, timeout=600) as client:
        started = time.perf_counter()
        for i in range(n):
            body = {"model": MODEL_ALIAS, "messages": messages(i), "max_tokens": max_tokens,
                    "temperature": 0.0, "seed": 0}
            response = client.post("/chat/completions", json=body)
            response.raise_for_status()
            tokens += response.json()["usage"]["completion_tokens"]
        return time.perf_counter() - started, tokens


async def through_engine(base_url: str, db: Path, n: int, max_tokens: int, round_no: int) -> tuple[float, int]:
    store = Store.open(db)
    engine = Engine(Endpoint(base_url, MODEL_ALIAS, "json_object", 2048), store, run_id=f"bench-{round_no}",
                    concurrency=1, timeout_s=600, retry=RetryPolicy())
    try:
        await engine.check()
        started = time.perf_counter()
        tokens = 0
        for i in range(n):
            # sample_index keeps each round's keys apart: every request reaches the server.
            answer = await engine.complete(ChatRequest(stage="bench", messages=messages(i), max_tokens=max_tokens,
                                                       temperature=0.0, seed=0, sample_index=round_no))
            tokens += answer.tokens_out
        return time.perf_counter() - started, tokens
    finally:
        await engine.close()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    rounds = {"direct": [], "engine": []}
    with tempfile.TemporaryDirectory(prefix="lf-emb-") as tmp, EmbeddedServer(context_window=2048) as server:
        direct(server.base_url, 2, 16)  # warm-up: weights paged in, first-request costs paid
        for round_no in range(2):
            rounds["direct"].append(direct(server.base_url, args.requests, args.max_tokens))
            rounds["engine"].append(asyncio.run(through_engine(server.base_url, Path(tmp) / "bench.duckdb",
                                                               args.requests, args.max_tokens, round_no)))
    rate = {k: sum(t for _, t in v) / sum(w for w, _ in v) for k, v in rounds.items()}
    results = {"requests_per_round": args.requests, "max_tokens": args.max_tokens, "rounds": rounds,
               "direct_tok_s": round(rate["direct"], 2), "engine_tok_s": round(rate["engine"], 2),
               "ratio": round(rate["engine"] / rate["direct"], 4)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "embedded_throughput.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
