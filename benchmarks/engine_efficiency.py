"""How close longform keeps an inference server to full use, against the ways people do it today.

Everything runs against benchmarks/sim_server.py, a continuous-batching server on a compressed
clock, and is scored by benchmarks/sim_ideal.py: efficiency = the workload's ideal makespan ÷ the
actual one (goal ≥ 0.95). In one run:

- longform (its engine, through the build's own code without Prefect) on AgentWrite, C = 64 and 256;
- a LongWriter-style client: 8 worker processes, each writing its samples' sections one by one;
- a stage-barrier client: asyncio.gather over all samples, one section index at a time;
  both baselines replay exactly the requests longform sent, with no database or retries;
- a replay with no barrier and no bookkeeping: what a client can reach on this server at best;
- the rubric judge in each sample's chain vs as a stage after all writing (half the prompts);
- the same build through the Prefect flow vs without it (orchestration share, goal ≤ 2%);
- resume: a build killed at ~50% and rerun, total generated tokens ÷ one clean run (goal ≤ 1.02);
- scale (--scale): a LongWriter-6k-sized build against 8 simulated data-parallel servers.

    python benchmarks/engine_efficiency.py [--prompts 200] [--scale]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import platform
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from sim_ideal import efficiency  # noqa: E402

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
for _logger in ("PREFECT_FLOW_RUNS", "PREFECT_TASK_RUNS"):
    os.environ.setdefault(f"PREFECT_LOGGING_LOGGERS_{_logger}_LEVEL", "CRITICAL")

# A GPU decodes one sequence at ~30 tokens/s when 64 run at once (an 8B model on one H100 with
# vLLM); the simulated clock runs `COMPRESSION` times faster. Prefill ~400x cheaper per token.
REAL_DECODE_MS = 33.0
COMPRESSION = 16.0
DECODE_MS = REAL_DECODE_MS / COMPRESSION
PREFILL_MS = DECODE_MS / 400
TOPICS = ["the history of lighthouses", "soil microbiology for farmers", "a city's first subway", "tidal energy",
          "medieval trade fairs", "the ethics of gene drives", "a mountain rescue team", "urban beekeeping",
          "the economics of container shipping", "a village library in winter", "volcanic islands",
          "early computer networks", "coral reef restoration", "a family bakery across three generations"]


# --- the simulated server -------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def sim_server(slots: int, decode_ms: float = DECODE_MS, prefill_ms: float = PREFILL_MS,
               sections: int = 0, prefix_cache_tokens: int = 0) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "sim_server.py"), "--port", str(port),
                             "--slots", str(slots), "--decode-ms", str(decode_ms), "--prefill-ms", str(prefill_ms),
                             "--sections", str(sections), "--prefix-cache-tokens", str(prefix_cache_tokens)],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"sim server did not start: {line!r}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


def server_log(url: str, reset: bool = False) -> list[dict]:
    log = httpx.get(f"{url}/stats", timeout=60).json()["log"]
    if reset:
        httpx.post(f"{url}/reset", timeout=60)
    return log


# --- the workload ---------------------------------------------------------------------------------

def write_prompts(path: Path, n: int, low: int, high: int, seed: int = 0, text_scale: int = 1) -> None:
    """n instructions, each tagged `[task i]`, asking for log-uniformly spread lengths (the target
    divided by `text_scale`: one simulated word then stands for that many)."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n):
            words = int(math.exp(rng.uniform(math.log(low), math.log(high))))
            topic = TOPICS[i % len(TOPICS)]
            f.write(json.dumps({"id": f"t{i}", "target_words": max(1, words // text_scale),
                                "instruction": f"[task {i}] Write a {words}-word feature article about {topic}."}) + "\n")


def write_config(path: Path, *, url: str | list[str], prompts: Path, db: Path, concurrency: int, rubric: bool = False,
                 active: int | None = None, routing: str = "affinity") -> Path:
    """One endpoint, or with a list of URLs an [[endpoints]] pool (`concurrency` each)."""
    active_line = f"max_active_samples = {active}" if active else ""
    urls = [url] if isinstance(url, str) else url
    header = "[endpoint]" if isinstance(url, str) else "[[endpoints]]"
    endpoints = "".join(f"""
{header}
kind = "openai"
base_url = "{u}/v1"
model = "sim"
concurrency = {concurrency}
context_window = 262144
""" for u in urls)
    path.write_text(f"""
[build]
name = "{path.stem}"
prompts = "{prompts}"
db = "{db}"
out_dir = "{db.parent}"
routing = "{routing}"
{active_line}
{endpoints}
[agentwrite]
max_section_words = 1000
# The simulated server sizes an answer from the "about N words" in the last message, which the
# single-message layout has (and the workload of earlier rounds was): the same requests to compare.
layout = "single_message"

[judges]
rubric = {str(rubric).lower()}

[export]
enabled = false
""")
    return path


# --- longform, with and without Prefect -----------------------------------------------------------

_TASKS = ("register_prompts", "expand_instructions", "write_shard", "write_until_accepted", "judge_remaining",
          "score_and_select", "self_lengthen_data", "gateau_stage", "export_stage")


def run_direct(config: Path, judge_after: bool = False) -> dict:
    """The build flow's own code with each Prefect task called as the plain function it wraps."""
    import flows.build as fb
    import flows.pipeline as pipeline  # what the flow composes: its tasks are looked up here

    saved = {name: getattr(pipeline, name) for name in (*_TASKS, "judge_panel")}
    for name in _TASKS:
        setattr(pipeline, name, saved[name].fn)
    if judge_after:
        pipeline.judge_panel = _judge_after_panel(saved["judge_panel"])
    cpu, started = time.process_time(), time.perf_counter()
    try:
        summary = asyncio.run(fb.build.fn(config=str(config)))
    finally:
        for name, value in saved.items():
            setattr(pipeline, name, value)
    return {"wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu, "summary": summary}


def _judge_after_panel(make_panel):
    """The baseline for judging: samples are only collected while writing; all judging waits for
    `judge-remaining`, as in a pipeline with a judge stage after the generation stage."""
    def make(session, prompts, candidates_per_prompt):
        panel = make_panel(session, prompts, None)

        async def collect(prompt_id, order, candidate):
            if candidate is not None:
                panel._candidates[prompt_id].append((order, candidate))
        panel.sample_done = collect
        return panel
    return make


def run_prefect(config: Path, warm_up: Path, url: str) -> dict:
    from prefect.testing.utilities import prefect_test_harness

    from flows.build import build
    with prefect_test_harness(server_startup_timeout=120):
        # The first flow run pays one-time imports and setup; it writes to another database.
        asyncio.run(build(config=str(warm_up), limit=2))
        server_log(url, reset=True)
        started = time.perf_counter()
        summary = asyncio.run(build(config=str(config)))
        return {"wall_s": time.perf_counter() - started, "summary": summary}


# --- baselines: replay longform's own requests ----------------------------------------------------

def recorded_chains(db: Path) -> list[list[dict]]:
    """Each sample's request bodies, in the order longform sent them."""
    from longform.store import Store

    chains: dict[str, list[dict]] = {}
    with Store.open_read_only(db) as store:
        _, rows = store.query("SELECT request_id, sample_id FROM requests WHERE error IS NULL ORDER BY created_at")
        for request_id, sample_id in rows:
            body = store.request_document(request_id)  # long texts put back from `texts`
            body.pop("sample_index", None)
            body.pop("template", None)
            chains.setdefault(sample_id, []).append(body)
    return list(chains.values())


def _longwriter_worker(args: tuple[str, list[list[dict]]]) -> int:
    url, chains = args
    with httpx.Client(base_url=f"{url}/v1", timeout=600) as client:
        for chain in chains:
            for body in chain:
                client.post("/chat/completions", json=body).raise_for_status()
    return len(chains)


def replay_longwriter(url: str, chains: list[list[dict]], workers: int = 8) -> float:
    """LongWriter's AgentWrite loop: a pool of processes, each sample's requests one after another."""
    shares = [(url, chains[i::workers]) for i in range(workers)]
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pool.map(_longwriter_worker, shares)
    return time.perf_counter() - started


async def _replay(url: str, chains: list[list[dict]], concurrency: int, barrier: bool) -> float:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(f"{url}/", connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=600)) as client:
        async def send(body: dict) -> None:
            async with client.post("v1/chat/completions", json=body) as response:
                response.raise_for_status()
                await response.read()

        async def chain(bodies: list[dict]) -> None:
            for body in bodies:
                await send(body)

        started = time.perf_counter()
        if barrier:
            for step in range(max(map(len, chains))):
                await asyncio.gather(*(send(c[step]) for c in chains if len(c) > step))
        else:
            await asyncio.gather(*(chain(c) for c in chains))
        return time.perf_counter() - started


def replay(url: str, chains: list[list[dict]], concurrency: int, barrier: bool) -> float:
    """Replay with aiohttp, one connection per slot: the cheapest client Python has."""
    return asyncio.run(_replay(url, chains, concurrency, barrier))


def server_capacity(requests: int = 3000, concurrency: int = 256) -> float:
    """Requests per second the simulated server answers at zero model cost, with the replay client."""
    body = {"model": "sim", "messages": [{"role": "user", "content": "[task 0] Write about 20 words."}],
            "max_tokens": 40}
    with sim_server(concurrency, 0.0, 0.0) as url:
        wall = replay(url, [[body] * (requests // concurrency)] * concurrency, concurrency, barrier=False)
    return requests / wall


# --- the runs ---------------------------------------------------------------------------------------

def measured(url: str, slots: int, **extra) -> dict:
    return {**efficiency(server_log(url, reset=True), slots), **extra}


def engine_runs(work: Path, prompts: Path, results: dict) -> None:
    results["sim_capacity_req_s"] = round(server_capacity())
    for slots in (64, 256):
        with sim_server(slots) as url:
            db = work / f"c{slots}.duckdb"
            run = run_direct(write_config(work / f"c{slots}.toml", url=url, prompts=prompts, db=db, concurrency=slots))
            results[f"longform_c{slots}"] = measured(url, slots, client_cpu_s=round(run["cpu_s"], 2),
                                                     client_wall_s=round(run["wall_s"], 2))
            chains = recorded_chains(db)
            replay(url, chains, slots, barrier=False)
            results[f"replay_c{slots}"] = measured(url, slots)
            replay(url, chains, slots, barrier=True)
            results[f"barrier_c{slots}"] = measured(url, slots)
    # LongWriter's loop has 8 requests in flight whatever the server could take, so nothing ever
    # queues and one run's log serves both C (scored against each C's ideal). It runs on an 8x
    # faster clock to save time; efficiency is a ratio to the same clock's ideal.
    with sim_server(256, DECODE_MS / 8, PREFILL_MS / 8) as url:
        replay_longwriter(url, chains)
        log = server_log(url, reset=True)
    for slots in (64, 256):
        results[f"longwriter_c{slots}"] = {**efficiency(log, slots), "clock": "8x faster"}
    for slots in (64, 256):
        print(f"C={slots}: " + ", ".join(f"{k} {results[f'{k}_c{slots}']['efficiency']}"
                                         for k in ("longform", "replay", "barrier", "longwriter")), flush=True)


def judge_runs(work: Path, prompts: Path, results: dict) -> None:
    slots = 64
    for mode in ("overlapped", "after"):
        with sim_server(slots) as url:
            cfg = write_config(work / f"judge_{mode}.toml", url=url, prompts=prompts,
                               db=work / f"judge_{mode}.duckdb", concurrency=slots, rubric=True)
            run_direct(cfg, judge_after=mode == "after")
            results[f"judge_{mode}"] = measured(url, slots)
    print(f"judges: overlapped {results['judge_overlapped']['efficiency']}, after {results['judge_after']['efficiency']}",
          flush=True)


def clean_run(work: Path, prompts: Path, results: dict) -> dict:
    """The C = 64 build, which the Prefect and resume measurements compare with."""
    if "longform_c64" not in results:
        with sim_server(64) as url:
            cfg = write_config(work / "c64.toml", url=url, prompts=prompts, db=work / "c64.duckdb", concurrency=64)
            run = run_direct(cfg)
            results["longform_c64"] = measured(url, 64, client_cpu_s=round(run["cpu_s"], 2),
                                               client_wall_s=round(run["wall_s"], 2))
    return results["longform_c64"]


def prefect_run(work: Path, prompts: Path, results: dict) -> None:
    direct = clean_run(work, prompts, results)["client_wall_s"]
    with sim_server(64) as url:
        cfg = write_config(work / "pf.toml", url=url, prompts=prompts, db=work / "pf.duckdb", concurrency=64)
        warm_up = write_config(work / "pf_warm.toml", url=url, prompts=prompts, db=work / "pf_warm.duckdb", concurrency=64)
        run = run_prefect(cfg, warm_up, url)
        results["build_prefect"] = measured(url, 64, build_wall_s=round(run["wall_s"], 2))
    share = (run["wall_s"] - direct) / run["wall_s"]
    results["prefect_share"] = {"direct_s": round(direct, 2), "prefect_s": round(run["wall_s"], 2),
                                "share": round(share, 4)}
    print(f"prefect share {share:.2%}", flush=True)


def child_build(config: Path) -> None:
    """Run in a subprocess (resume and scale): one build, then its own CPU and peak memory."""
    run = run_direct(config)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print("RESULT " + json.dumps({"wall_s": run["wall_s"], "cpu_s": usage.ru_utime + usage.ru_stime,
                                  "peak_rss_mb": usage.ru_maxrss / 1024,
                                  "requests": run["summary"]["requests_sent"],
                                  "samples": run["summary"]["samples"]}), flush=True)


def spawn_build(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--child-build", str(config)], stdout=subprocess.PIPE, text=True)


def child_result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"build failed ({proc.returncode})")
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def resume_run(work: Path, prompts: Path, results: dict) -> None:
    """Kill -9 a build at ~50% of its generated tokens, rerun it, and count what the server generated."""
    clean = clean_run(work, prompts, results)["tokens_out"]

    def generated(log: list[dict]) -> float:
        return sum(e["tokens_out"] * e["done"] for e in log)

    with sim_server(64) as url:
        cfg = write_config(work / "resume.toml", url=url, prompts=prompts, db=work / "resume.duckdb", concurrency=64)
        proc = spawn_build(cfg)
        while generated(server_log(url)) < clean / 2:
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        at_kill = server_log(url, reset=True)
        child_result(spawn_build(cfg))
        after = server_log(url, reset=True)
    total = generated(at_kill) + generated(after)
    in_flight = [e for e in at_kill if e["aborted"]]
    results["resume"] = {"clean_tokens": clean, "killed_at_tokens": round(generated(at_kill)),
                         "aborted_in_flight": len(in_flight),
                         "lost_in_flight_tokens": round(sum(e["tokens_out"] * e["done"] for e in in_flight)),
                         "resumed_tokens": round(generated(after)), "ratio": round(total / clean, 4)}
    print(f"resume: {total / clean:.4f} x one clean run", flush=True)


def scale_run(work: Path, results: dict, prompts_n: int, servers: int, slots_per_server: int) -> None:
    """LongWriter-6k's shape: 6000 prompts of 2k-32k words, ~10 sections each, on 8 x 64 slots.

    The request count is full size; the text is not: one simulated word stands for TEXT_SCALE real
    ones, so the bytes fit this machine (the database size is reported as measured). The clock is
    set so the run takes a few minutes; the real-time estimate scales both back.
    """
    text_scale = 16
    prompts = work / "scale.jsonl"
    write_prompts(prompts, prompts_n, 2000, 32000, seed=1, text_scale=text_scale)
    slots = servers * slots_per_server
    decode_ms = 20.0  # per simulated word, i.e. per TEXT_SCALE real tokens
    with ExitStack() as stack:
        # One simulated server per GPU, each an endpoint of the pool (prefix-affinity routing).
        urls = [stack.enter_context(sim_server(slots_per_server, decode_ms, decode_ms / 400, sections=10))
                for _ in range(servers)]
        db = work / "scale.duckdb"
        cfg = write_config(work / "scale.toml", url=urls, prompts=prompts, db=db, concurrency=slots_per_server)
        child = child_result(spawn_build(cfg))
        eff = efficiency([entry for url in urls for entry in server_log(url, reset=True)], slots)
    to_real = REAL_DECODE_MS * text_scale / decode_ms
    results["scale"] = {
        **eff, "servers": servers, "slots_per_server": slots_per_server, "text_scale": text_scale,
        "assumed_decode_tok_s_per_seq": round(1000 / REAL_DECODE_MS, 1),
        "assumed_decode_tok_s_per_gpu": round(1000 / REAL_DECODE_MS * slots_per_server),
        "real_tokens_out": eff["tokens_out"] * text_scale,
        "ideal_real_hours": round(eff["ideal_s"] * to_real / 3600, 2),
        "actual_real_hours": round(eff["actual_s"] * to_real / 3600, 2),
        "client_cpu_ms_per_request": round(1000 * child["cpu_s"] / max(1, child["requests"]), 2),
        "peak_rss_mb": round(child["peak_rss_mb"]), "build_wall_s": round(child["wall_s"], 1),
        "db_mb": round(sum(p.stat().st_size for p in work.glob("scale.duckdb*")) / 2**20),
        "samples_written": child["samples"],
    }
    print(f"scale: {prompts_n} prompts, efficiency {eff['efficiency']}, {results['scale']['db_mb']} MB", flush=True)


def sharded_scale_run(work: Path, results: dict, prompts_n: int, servers: int, slots_per_server: int,
                      shards: int = 4) -> None:
    """The scale workload as `shards` local processes (`longform build --shards N --local`), then the
    merge alone timed again into a fresh database: seconds per million rows merged."""
    text_scale, decode_ms = 16, 20.0
    prompts = work / "sharded.jsonl"
    write_prompts(prompts, prompts_n, 2000, 32000, seed=1, text_scale=text_scale)
    with ExitStack() as stack:
        urls = [stack.enter_context(sim_server(slots_per_server, decode_ms, decode_ms / 400, sections=10))
                for _ in range(servers)]
        cfg = write_config(work / "sharded.toml", url=urls, prompts=prompts, db=work / "sharded.duckdb",
                           concurrency=slots_per_server)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "longform.cli", "build", "--config", str(cfg), "--shards",
                               str(shards), "--local"], capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"sharded build failed: {done.stderr[-2000:]}")
        eff = efficiency([entry for url in urls for entry in server_log(url, reset=True)], servers * slots_per_server)
    from longform.store import Store

    files = sorted((work / "sharded" / "shards").glob(f"shard-*-of-{shards}.duckdb"))
    with Store.open(work / "merge-only.duckdb") as store:
        started = time.perf_counter()
        merged = sum(store.merge_shard(f, "sharded")[0] for f in files)
        merge_s = time.perf_counter() - started
    results["scale_sharded"] = {**eff, "shards": shards, "build_wall_s": round(wall, 1), "rows_merged": merged,
                                "merge_s": round(merge_s, 2),
                                "merge_s_per_million_rows": round(merge_s / max(merged, 1) * 1e6, 2)}
    print(f"scale, {shards} local shards: efficiency {eff['efficiency']}, merge {merge_s:.1f} s for {merged:,} rows",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--scale", action="store_true", help="also the LongWriter-6k-sized run")
    parser.add_argument("--scale-prompts", type=int, default=6000)
    parser.add_argument("--sharded", action="store_true", help="also the scale run as 4 local shards")
    parser.add_argument("--only", nargs="*", default=["engine", "judge", "prefect", "resume"])
    parser.add_argument("--child-build", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.child_build:
        child_build(args.child_build)
        return

    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                     "prompts": args.prompts, "decode_ms": DECODE_MS, "prefill_ms": PREFILL_MS,
                     "compression": COMPRESSION}
    with tempfile.TemporaryDirectory(prefix="lf-bench-") as tmp:
        work = Path(tmp)
        prompts = work / "prompts.jsonl"
        write_prompts(prompts, args.prompts, 2000, 5000)
        if "engine" in args.only:
            engine_runs(work, prompts, results)
        if "judge" in args.only:
            half = work / "half.jsonl"
            half.write_text("".join(prompts.read_text().splitlines(keepends=True)[:args.prompts // 2]))
            judge_runs(work, half, results)
        if "prefect" in args.only:
            prefect_run(work, prompts, results)
        if "resume" in args.only:
            resume_run(work, prompts, results)
        if args.scale:
            scale_run(work, results, args.scale_prompts, servers=8, slots_per_server=64)
        if args.sharded:
            sharded_scale_run(work, results, args.scale_prompts, servers=8, slots_per_server=64)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "engine_efficiency.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
