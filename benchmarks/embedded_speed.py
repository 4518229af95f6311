"""How fast the embedded path is, and where its time goes: the demo build against llama.cpp's own rates.

1. llama.cpp's own rates here: a bare `llama_cpp.Llama` with the server's settings (same GGUF,
   threads, window, logits for every token) prefills a 1,024-token text and decodes 128 tokens
   after it.
2. The demo build (`configs/demo.toml`: same prompts, candidates, judges, GATEAU and export) into
   a fresh database in a temporary folder, as `longform build` from the command line. Read back:
   wall time, time per stage (model requests per stage from the `requests` table, corpus-wide
   stages from the run's summary), prompt tokens sent, prompt tokens actually prefilled (what
   llama.cpp evaluated after its prefix cache, from its own per-request timings in the server's
   log, `LONGFORM_EMBEDDED_LOG`), generated tokens.
3. bound = prompt tokens sent ÷ prefill rate + generated tokens ÷ decode rate: what the build's
   tokens would cost if nothing were reused. wall ÷ bound below 1 means the prefix cache saved
   more than everything else (start-up, judges' grammar, GATEAU, export) cost.
4. The same command again: it must send no request (the request cache answers everything).

Goals (issue 24): prefilled ÷ generated ≤ 3, wall ÷ bound ≤ 0.9, the build ≤ 6 minutes, the rerun
sends 0 requests.

    python benchmarks/embedded_speed.py [--layout conversation|single_message] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

# llama.cpp prints this after every completion (llama_perf_context_print); N is what it evaluated
# of the prompt, after reusing the cached prefix.
_PREFILLED = re.compile(r"prompt eval time =\s*[\d.]+ ms /\s*(\d+) tokens")


def llama_rates(context_tokens: int = 1024, decode_tokens: int = 128) -> dict:
    """Prefill and decode tokens/s of a bare llama.cpp model with the embedded server's settings, at
    the context a demo section or judge works in: prefill a 1,024-token text, then decode 128 tokens
    after it (decoding slows as the context grows: here ~99 tokens/s after 64 tokens, ~62 after 1,500)."""
    from llama_cpp import Llama

    import longform.models.llama_server  # noqa: F401  (the server's patches: no prompt logits)
    from longform.models.embedded import CONTEXT_WINDOW, flash_attention, gguf_path

    threads = os.cpu_count() or 1
    llm = Llama(model_path=str(gguf_path()), n_ctx=CONTEXT_WINDOW, n_threads=threads, n_threads_batch=threads,
                logits_all=True, flash_attn=flash_attention(), verbose=False)  # as EmbeddedServer starts it
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    tokens = llm.tokenize(text.encode("utf-8"))[:context_tokens]
    llm.eval(tokens[:64])  # warm up
    llm.reset()
    started = time.perf_counter()
    llm.eval(tokens)
    prefill_s = time.perf_counter() - started
    prompt = llm.detokenize(tokens).decode("utf-8", "ignore")
    llm.reset()
    llm.create_completion(prompt, max_tokens=1, temperature=0.0)   # the prompt is now cached
    started = time.perf_counter()
    out = llm.create_completion(prompt, max_tokens=decode_tokens, temperature=0.7, seed=1, stop=[])
    decode_s = time.perf_counter() - started
    return {"flash_attention": flash_attention(), "prefill_tok_s": round(len(tokens) / prefill_s, 1),
            "decode_tok_s": round(out["usage"]["completion_tokens"] / decode_s, 1),
            "context_tokens": len(tokens), "threads": threads}


def demo_config(folder: Path, layout: str) -> Path:
    """configs/demo.toml with its database and outputs in `folder`."""
    text = (ROOT / "configs" / "demo.toml").read_text(encoding="utf-8")
    text = text.replace('prompts = "configs/demo_prompts.jsonl"', f'prompts = "{ROOT / "configs" / "demo_prompts.jsonl"}"')
    text = text.replace('db = "datasets_out/corpus.duckdb"', f'db = "{folder / "corpus.duckdb"}"')
    text = text.replace('out_dir = "datasets_out"', f'out_dir = "{folder / "out"}"')
    if layout != "continuation":
        text = text.replace("[agentwrite]\n", f'[agentwrite]\nlayout = "{layout}"\n', 1)
    path = folder / "demo.toml"
    path.write_text(text, encoding="utf-8")
    return path


def build(config: Path, folder: Path, log: Path) -> float:
    env = {**os.environ, "LONGFORM_EMBEDDED_LOG": str(log), "PREFECT_HOME": str(folder / "prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "longform.cli", "build", "--config", str(config)], cwd=folder,
                          env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"the demo build failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return wall


def prefilled(log: Path) -> list[int]:
    return [int(n) for n in _PREFILLED.findall(log.read_text(encoding="utf-8", errors="replace"))] if log.exists() else []


def measure_build(db: Path) -> dict:
    con = duckdb.connect(str(db), read_only=True)
    try:
        run_id, summary = con.execute("select run_id, summary from runs order by started_at desc limit 1").fetchone()
        by_stage = con.execute("""
            select stage, count(*), sum(tokens_in), sum(tokens_out), round(sum(latency_s), 1)
            from requests where run_id = ? and error is null group by stage order by stage""", [run_id]).fetchall()
    finally:
        con.close()
    summary = json.loads(summary)
    return {"run_id": run_id, "summary": summary,
            "stages": {stage: {"requests": n, "tokens_in": int(tin), "tokens_out": int(tout), "seconds": secs}
                       for stage, n, tin, tout, secs in by_stage}}


def machine() -> str:
    """The CPU by name, its cores, and whether it computes bfloat16 natively: hosts with the same
    number of cores differ in everything these figures depend on (2026-12-04: a 2-core AMD EPYC
    with AVX2 only decoded at 52 tokens/s where the 2-core host with native bf16 decoded at 61, ran
    GATEAU in float32 2.3× slower, and sampled other text from the same seeds)."""
    import torch

    from longform.models.embedded import cpu_info

    name = cpu_info("model name") or platform.processor() or platform.machine()
    native = "native bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "no native bf16"
    return f"{name}, {os.cpu_count()} cores, {native}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layout", default="continuation", choices=["continuation", "single_message", "conversation"])
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()

    rates = llama_rates()
    print(f"llama.cpp here ({rates['threads']} threads, {rates['context_tokens']}-token context): prefill"
          f" {rates['prefill_tok_s']} tokens/s, decode {rates['decode_tok_s']} tokens/s", flush=True)

    folder = args.keep or Path(tempfile.mkdtemp(prefix="longform-speed-"))
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in ("corpus.duckdb", "corpus.duckdb.wal", "out", "embedded.log", "embedded-rerun.log"):
        path = folder / leftover
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    config = demo_config(folder, args.layout)
    log = folder / "embedded.log"
    wall = build(config, folder, log)
    first = measure_build(folder / "corpus.duckdb")
    s = first["summary"]
    evaluated = prefilled(log)
    rerun_wall = build(config, folder, folder / "embedded-rerun.log")
    rerun = measure_build(folder / "corpus.duckdb")["summary"]

    sent, generated, filled = s["tokens_in"], s["tokens_out"], sum(evaluated)
    bound = sent / rates["prefill_tok_s"] + generated / rates["decode_tok_s"]
    bound_filled = filled / rates["prefill_tok_s"] + generated / rates["decode_tok_s"]
    requests = sum(st["requests"] for st in first["stages"].values())
    result = {
        "machine": machine(),
        "layout": args.layout,
        **rates,
        "command_wall_s": round(wall, 1),
        "build_wall_s": s["wall_s"],
        "requests": requests,
        "prompt_tokens_sent": sent,
        "prompt_tokens_prefilled": filled,
        "prefill_requests_logged": len(evaluated),
        "generated_tokens": generated,
        "prefilled_per_generated": round(filled / max(1, generated), 2),
        "sent_per_generated": round(sent / max(1, generated), 2),
        "bound_s": round(bound, 1),
        "wall_over_bound": round(s["wall_s"] / bound, 3),
        "bound_prefilled_s": round(bound_filled, 1),
        "wall_over_bound_prefilled": round(s["wall_s"] / bound_filled, 3),
        "stages": first["stages"],
        "corpus_stage_s": s.get("stage_s", {}),
        "samples": s["samples"],
        "median_length_score": s["median_length_score"],
        "rerun_requests_sent": rerun["requests_sent"],
        "rerun_wall_s": round(rerun_wall, 1),
    }
    result["goal"] = {"prefilled_per_generated<=3": result["prefilled_per_generated"] <= 3,
                      "wall_over_bound<=0.9": result["wall_over_bound"] <= 0.9,
                      "build<=360s": s["wall_s"] <= 360,
                      "rerun_sends_nothing": rerun["requests_sent"] == 0}

    print(f"demo build ({args.layout} layout): {s['wall_s']} s in the run ({wall:.0f} s for the command),"
          f" {requests} requests, {s['samples']} samples, median S_l {s['median_length_score']}")
    for stage, st in first["stages"].items():
        print(f"  {stage:18} {st['requests']:3} requests {st['tokens_in']:7} tokens in {st['tokens_out']:6} out"
              f" {st['seconds']:7.1f} s")
    for stage, secs in result["corpus_stage_s"].items():
        print(f"  {stage:18} {secs:7.1f} s")
    print(f"prompt tokens sent {sent}, prefilled {filled} ({len(evaluated)} requests logged), generated {generated}:"
          f" prefilled ÷ generated {result['prefilled_per_generated']} (sent ÷ generated {result['sent_per_generated']})")
    print(f"bound {result['bound_s']} s: wall ÷ bound {result['wall_over_bound']}"
          f" (÷ the bound on prefilled tokens: {result['wall_over_bound_prefilled']})")
    print(f"rerun: {rerun['requests_sent']} requests sent, {rerun_wall:.0f} s")
    print("goals: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in result["goal"].items()))
    RESULTS.mkdir(exist_ok=True)
    name = "embedded_speed" if args.layout == "continuation" else f"embedded_speed_{args.layout}"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
