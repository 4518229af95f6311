"""Fleet benchmarks: what prefix-affinity routing saves, and how the database grows with sections.

1. Routing. Four simulated servers (sim_server.py), each with vLLM-style automatic prefix caching,
   run the same AgentWrite build three times through longform's engine: `routing = "affinity"`
   (the default: a sample's requests stay on one server), "round_robin" (what a plain load
   balancer does) and "least_loaded". Reported: prefill tokens the servers charged (tokens not
   found in their prefix cache), prompt tokens, makespan and efficiency against the ideal.
   Goal: affinity charges ≤ 40% of round-robin's prefill tokens, with a makespan no worse.
2. Storage. The same prompts written as 10 and as 40 sections per sample: database bytes per
   generated token. Goal: the ratio (40 ÷ 10) ≤ 1.3, i.e. the database grows linearly.

    python benchmarks/fleet_routing.py [--prompts 96]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_efficiency import run_direct, server_log, sim_server, write_config, write_prompts  # noqa: E402
from sim_ideal import efficiency  # noqa: E402

SERVERS, SLOTS = 4, 16


def routing_runs(work: Path, n: int, results: dict) -> None:
    prompts = work / "routing.jsonl"
    write_prompts(prompts, n, 2000, 6000, seed=3)
    for policy in ("affinity", "round_robin", "least_loaded"):
        with ExitStack() as stack:
            # Each server's cache holds about what its slots need at once (16 x 8k tokens).
            urls = [stack.enter_context(sim_server(SLOTS, sections=8, prefix_cache_tokens=SLOTS * 8192))
                    for _ in range(SERVERS)]
            cfg = write_config(work / f"route-{policy}.toml", url=urls, prompts=prompts,
                               db=work / f"route-{policy}.duckdb", concurrency=SLOTS, routing=policy)
            run = run_direct(cfg)
            log = [entry for url in urls for entry in server_log(url)]
        done = [e for e in log if not e["aborted"]]
        results[policy] = {
            **efficiency(log, SERVERS * SLOTS),
            "requests": len(done),
            "prompt_tokens": sum(e["tokens_in"] for e in done),
            "prefill_tokens": sum(e["prefill_tokens"] for e in done),
            "client_cpu_ms_per_request": round(1000 * run["cpu_s"] / max(1, len(done)), 2),
        }
        print(f"routing {policy}: prefill {results[policy]['prefill_tokens']:,} of"
              f" {results[policy]['prompt_tokens']:,} prompt tokens, efficiency {results[policy]['efficiency']}",
              flush=True)
    rr, aff = results["round_robin"], results["affinity"]
    results["affinity_prefill_vs_round_robin"] = round(aff["prefill_tokens"] / rr["prefill_tokens"], 3)
    results["affinity_makespan_vs_round_robin"] = round(aff["actual_s"] / rr["actual_s"], 3)


def storage_runs(work: Path, n: int, results: dict) -> None:
    prompts = work / "storage.jsonl"
    write_prompts(prompts, n, 8000, 8000, seed=4)
    for sections in (10, 40):
        db = work / f"storage-{sections}.duckdb"
        with sim_server(256, decode_ms=0.02, prefill_ms=0.0, sections=sections) as url:
            run_direct(write_config(work / f"storage-{sections}.toml", url=url, prompts=prompts, db=db,
                                    concurrency=256))
            tokens = sum(e["tokens_out"] for e in server_log(url) if not e["aborted"])
        size = db.stat().st_size
        results[f"sections_{sections}"] = {"db_bytes": size, "generated_tokens": tokens,
                                           "bytes_per_token": round(size / tokens, 2)}
        print(f"storage, {sections} sections: {size / tokens:.2f} bytes per generated token", flush=True)
    results["bytes_per_token_40_vs_10"] = round(results["sections_40"]["bytes_per_token"]
                                                / results["sections_10"]["bytes_per_token"], 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=96)
    parser.add_argument("--storage-prompts", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                     "servers": SERVERS, "slots_per_server": SLOTS}
    with tempfile.TemporaryDirectory(prefix="lf-fleet-") as tmp:
        routing_runs(Path(tmp), args.prompts, results)
        storage_runs(Path(tmp), args.storage_prompts, results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fleet_routing.json").write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if not isinstance(v, dict)}, indent=2))


if __name__ == "__main__":
    main()
