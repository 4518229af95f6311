"""Does the data work? Before and after training on longform's data, on the embedded model (issue 25).

Arms, each SmolLM2-135M-Instruct (the embedded model's weights in transformers, fp32):
- **A0** the base model, untrained;
- **A1** trained on one-shot answers of the same model to the same training instructions (the
  "without long data" control): `longform eval --endpoint embedded` on the training prompts, the
  answers' length labels rewritten to their real lengths the same way as A2's;
- **A2** trained on longform's AgentWrite answers to those instructions (`longform build`, then
  `longform export --relabel-length --decontaminate configs/eval_prompts.jsonl`: no plan, lengths
  relabeled, nothing that overlaps an evaluation prompt);
- **A3** (`--a3`) A2's answers without relabeling.
Every trained arm gets the same steps, optimiser, schedule and seed (benchmarks/closing_loop/train.toml).
All are then evaluated by `longform eval` on configs/eval_prompts.jsonl (24 prompts, 300–2,000 words,
English and Chinese, every length kind; none seen in training), in one command, so the paired
differences come with it.

Every stage is cached and the run can be done in parts: generation through the request cache,
training by the data's hash (a model directory that exists is not trained again), eval answers
by their answer keys. Results and per-stage seconds: benchmarks/results/closing_loop.json; the
report and plot: benchmarks/results/closing_loop/. Not part of `make test` or `make bench`:
about two hours on 2 CPU cores.

    python benchmarks/closing_loop.py [--stages build,base,data,train,eval] [--quality] [--a3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from longform.dataset.decontaminate import EvalIndex  # noqa: E402
from longform.dataset.export import write_parquet  # noqa: E402
from longform.length_reader import spec_for  # noqa: E402
from longform.prompts import load_prompts  # noqa: E402
from longform.dataset.relabel import relabel  # noqa: E402

HERE = ROOT / "benchmarks" / "closing_loop"
OUT = ROOT / "datasets_out" / "closing_loop"
DB = OUT / "corpus.duckdb"          # the AgentWrite build
EVAL_DB = OUT / "eval.duckdb"       # one-shot answers, training runs and evaluations (a build holds DB's lock)
TRAIN_PROMPTS = HERE / "train_prompts.jsonl"
EVAL_PROMPTS = ROOT / "configs" / "eval_prompts.jsonl"
RESULTS = ROOT / "benchmarks" / "results" / "closing_loop.json"
REPORT = ROOT / "benchmarks" / "results" / "closing_loop"
# Every eval answer is capped at 1,024 tokens (about 750 English words). Measured here: one batch
# of 24 answers capped at 2,048 tokens ran for more than 45 minutes on 2 cores (a 135M model often
# loops without stopping, and such an answer holds its batch to the cap), so three models did not
# fit a session. The cap is the same for every arm: prompts asking for more than ~750 words are
# scored on what fits under it, which limits every arm alike and narrows their differences there.
EVAL_MAX_TOKENS = 1024
# All 24 prompts in one batch: on 2 cores a step for 24 rows costs ~2.8× a step for one, and a
# batch runs until its longest row ends, so one batch wastes the least.
EVAL_BATCH = 24
# A1's one-shot answers (on the llama.cpp server, one at a time) are capped at 2,048 tokens; those
# the cap cut are left out of A1's data.
ONE_SHOT_MAX_TOKENS = 2048


def longform(*args: str) -> str:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "longform"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    sys.stdout.write(proc.stdout[-3000:])
    if proc.returncode:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"longform {args[0]} failed ({proc.returncode})")
    return proc.stdout


def query(sql: str, db: Path = EVAL_DB) -> list[dict]:
    return json.loads(longform("query", "--db", str(db), "--format", "json", sql) or "[]")


def timed(results: dict, stage: str, fn):
    started = time.monotonic()
    value = fn()
    results.setdefault("stage_s", {})[stage] = round(time.monotonic() - started, 1)
    save(results)
    return value


def save(results: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def build() -> None:
    longform("build", "-c", str(HERE / "build.toml"))


def agentwrite_data(name: str, relabeled: bool) -> Path:
    args = ["export", "--db", str(DB), "--out-dir", str(OUT), "--name", name, "--force", "--test-ratio", "0",
            "--decontaminate", str(EVAL_PROMPTS), "--no-include-plan"]
    longform(*args, "--relabel-length" if relabeled else "--no-relabel-length")
    return OUT / name


def one_shot_data(name: str) -> Path:
    """A1's data: one request per training instruction to the same embedded model, at the build's
    sampling; its instructions relabeled and decontaminated by the same code as the export's."""
    out = longform("eval", "--endpoint", "embedded", "--prompts", str(TRAIN_PROMPTS), "--db", str(EVAL_DB),
                   "--temperature", "0.7", "--top-p", "0.95", "--max-new-tokens", str(ONE_SHOT_MAX_TOKENS),
                   "--out", str(OUT / "one-shot-eval"))
    eval_id = re.search(r"eval (e-\S+):", out).group(1)
    answers = query(f"SELECT prompt_id, instruction, text, words, finish_reason FROM eval_answers"
                    f" WHERE eval_id = '{eval_id}' AND error IS NULL ORDER BY prompt_id")
    specs = {p.prompt_id: spec_for(p, 1) for p in load_prompts(TRAIN_PROMPTS)}
    index = EvalIndex([EVAL_PROMPTS])
    rows = []
    for a in answers:
        # An answer cut by the token cap has no end: training on it would teach the model not to stop
        # (AgentWrite's answers all end). It stays in eval_answers, counted in the results.
        if index.overlap(a["instruction"]) or a["finish_reason"] != "stop":
            continue
        s = specs[a["prompt_id"]]
        instruction = relabel(a["instruction"], kind=s.kind, low=s.low, high=s.high, unit=s.unit,
                              written=a["words"]) or a["instruction"]
        rows.append({"messages": [{"role": "user", "content": instruction}, {"role": "assistant", "content": a["text"]}],
                     "prompt_id": a["prompt_id"], "original_instruction": a["instruction"], "words": a["words"],
                     "finish_reason": a["finish_reason"]})
    write_parquet(OUT / name / "sft" / "train.parquet", rows)
    return OUT / name


def data_hash(dataset: Path) -> str:
    return hashlib.sha256((dataset / "sft" / "train.parquet").read_bytes()).hexdigest()[:12]


def train(arm: str, dataset: Path, steps: int) -> Path:
    config = HERE / "train.toml"
    key = hashlib.sha256(f"{data_hash(dataset)}|{config.read_text()}|{steps}".encode()).hexdigest()[:12]
    model = OUT / "models" / f"{arm}-{key}"
    if not (model / "training_log.json").exists():
        shutil.rmtree(model, ignore_errors=True)
        longform("train", "sft", "--dataset", str(dataset), "--model", "embedded", "-c", str(config),
                 "--max-steps", str(steps), "--output", str(model), "--db", str(EVAL_DB))
    return model


def dataset_stats(dataset: Path) -> dict:
    import pyarrow.parquet as pq

    rows = pq.read_table(dataset / "sft" / "train.parquet").to_pylist()
    words = sorted(r["words"] for r in rows)
    relabeled = sum(r.get("original_instruction") not in (None, r["messages"][0]["content"]) for r in rows)
    return {"rows": len(rows), "median_words": words[len(words) // 2] if words else None,
            "min_words": words[0] if words else None, "max_words": words[-1] if words else None,
            "relabeled": relabeled}


def curve(model: Path) -> list[float]:
    log = json.loads((model / "training_log.json").read_text())
    return [round(e["loss"], 4) for e in log if "loss" in e]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default="build,base,data,train,eval")
    parser.add_argument("--steps", type=int, default=24, help="Optimizer steps per trained arm.")
    parser.add_argument("--quality", action="store_true", help="Also judge S_q (the rubric judge, embedded).")
    parser.add_argument("--a3", action="store_true", help="Also A3: AgentWrite answers, lengths not relabeled.")
    args = parser.parse_args()
    stages = set(args.stages.split(","))
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["machine"] = f"{os.cpu_count()} CPU cores, no GPU"
    if "build" in stages:
        timed(results, "build", build)
    if "data" in stages:
        a2 = timed(results, "data_a2", lambda: agentwrite_data("a2-agentwrite", relabeled=True))
        a1 = timed(results, "data_a1", lambda: one_shot_data("a1-one-shot"))
        results["data"] = {"A1": dataset_stats(a1), "A2": dataset_stats(a2)}
        results["data"]["A1"]["cut_by_cap_left_out"] = query(
            "SELECT count(*) AS n FROM eval_answers a JOIN evals e USING (eval_id, model)"
            f" WHERE e.prompts_path = '{TRAIN_PROMPTS}' AND a.finish_reason = 'length'"
            " AND a.eval_id = (SELECT max_by(eval_id, created_at) FROM evals WHERE prompts_path ="
            f" '{TRAIN_PROMPTS}')")[0]["n"]
        if args.a3:
            a3 = timed(results, "data_a3", lambda: agentwrite_data("a3-agentwrite-asked", relabeled=False))
            results["data"]["A3"] = dataset_stats(a3)
        save(results)
    arms = {"A1": OUT / "a1-one-shot", "A2": OUT / "a2-agentwrite"}
    if args.a3:
        arms["A3"] = OUT / "a3-agentwrite-asked"
    models = {}
    if "train" in stages or "eval" in stages:
        for arm, dataset in arms.items():
            models[arm] = timed(results, f"train_{arm}", lambda arm=arm, dataset=dataset: train(arm, dataset, args.steps))
            results.setdefault("curves", {})[arm] = curve(models[arm])
        save(results)
    common = ["--prompts", str(EVAL_PROMPTS), "--db", str(EVAL_DB), "--max-new-tokens", str(EVAL_MAX_TOKENS),
              "--batch-size", str(EVAL_BATCH)]
    if "base" in stages:   # A0 alone: it needs no data, so it can run while the build does
        timed(results, "eval_A0", lambda: longform("eval", "--model", "embedded", *common,
                                                   "--out", str(OUT / "base-eval")))
    if "eval" in stages:
        cmd = ["eval", "--model", "embedded", *[a for arm in models for a in ("--model", str(models[arm]))],
               *common, "--out", str(REPORT)]
        out = timed(results, "eval", lambda: longform(*cmd, *(["--quality"] if args.quality else [])))
        eval_id = re.search(r"eval (e-\S+):", out).group(1)
        labels = {"embedded": "A0", **{models[arm].name: arm for arm in models}}
        results["eval_id"] = eval_id
        results["arms"] = {labels[r["model"]]: json.loads(r["summary"]) if isinstance(r["summary"], str) else r["summary"]
                           for r in query(f"SELECT model, summary FROM evals WHERE eval_id = '{eval_id}'")}
        results["paired"] = [{**p, "model_a": labels[p["model_a"]], "model_b": labels[p["model_b"]]}
                             for p in query("SELECT model_a, model_b, metric, n, mean_diff, ci_low, ci_high"
                                            f" FROM eval_pairs WHERE eval_id = '{eval_id}' ORDER BY 1, 2, 3")]
        save(results)
    print(json.dumps({k: results.get(k) for k in ("stage_s", "data", "arms", "paired")}, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
