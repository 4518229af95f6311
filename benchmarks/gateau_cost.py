"""GATEAU's cost against one plain forward pass over the same tokens, in the same run.

Goals (issue 5): HMG ≤ 2.5 × a plain forward pass; HMG + CAM ≤ 5 × (reported with the number of
segments, which CAM's cost grows with). Runs on the embedded model's own weights, on CPU.

    python benchmarks/gateau_cost.py [--samples 6] [--paragraphs 8] [--window 512]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from judges.gateau import GateauScorer, Sample  # noqa: E402
from longform.models.hf_model import load_causal_lm  # noqa: E402

SENTENCES = [
    "The harbour woke slowly, gulls circling the masts while the first carts rolled down to the quay.",
    "Merchants argued over the price of salt, and the clerk wrote every figure twice to be sure.",
    "By noon the fog had lifted, showing the long line of warehouses and the river beyond them.",
    "Children ran between the barrels, chased by a dog that belonged to no one in particular.",
    "In the evening the lamps were lit one by one, and the taverns filled with sailors and songs.",
    "An old captain told the story of the storm again, adding a new wave to it every year.",
]


def sample(k: int, paragraphs: int, sentences_per_paragraph: int) -> Sample:
    paras = []
    for p in range(paragraphs):
        paras.append(" ".join(SENTENCES[(k + p + i) % len(SENTENCES)] for i in range(sentences_per_paragraph)))
    return Sample(f"b{k}", "Write a long story about a harbour town.", tuple(paras))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--paragraphs", type=int, default=8)
    parser.add_argument("--sentences", type=int, default=8)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    model, tokenizer = load_causal_lm("embedded")
    scorer = GateauScorer(model, tokenizer, window=args.window, max_segments=8, batch_size=8)
    samples = [sample(k, args.paragraphs, args.sentences) for k in range(args.samples)]
    encoded = [scorer.encode(s) for s in samples]

    def plain() -> float:
        started = time.perf_counter()
        with torch.no_grad():
            for enc in encoded:
                model(input_ids=torch.tensor([enc.ids]))
        return time.perf_counter() - started

    plain()  # warm-up
    t_plain = min(plain() for _ in range(2))
    started = time.perf_counter()
    for enc in encoded:
        scorer.full_nll(enc)
        scorer.windowed_nll(enc)
    t_hmg = time.perf_counter() - started
    started = time.perf_counter()
    for s in samples:
        scorer.measure(s)
    t_all = time.perf_counter() - started

    tokens = sum(len(e.ids) for e in encoded)
    result = {
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}",
        "samples": args.samples, "tokens_per_sample": tokens // args.samples, "window": args.window,
        "segments": len(encoded[0].segments), "plain_s": round(t_plain, 3), "hmg_s": round(t_hmg, 3),
        "hmg_cam_s": round(t_all, 3), "hmg_ratio": round(t_hmg / t_plain, 2), "hmg_cam_ratio": round(t_all / t_plain, 2),
        "plain_tokens_per_s": round(tokens / t_plain), "hmg_cam_tokens_per_s": round(tokens / t_all),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gateau_cost.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| GATEAU on SmolLM2-135M (CPU) | time | ÷ plain forward | goal | sample tokens/s |")
    print("|---|---|---|---|---|")
    print(f"| plain forward pass, {args.samples} × {result['tokens_per_sample']} tokens | {t_plain:.2f} s | 1 | | "
          f"{result['plain_tokens_per_s']:,} |")
    print(f"| HMG (full + windowed, W = {args.window}) | {t_hmg:.2f} s | {result['hmg_ratio']} | ≤ 2.5 | |")
    print(f"| HMG + CAM ({result['segments']} segments) | {t_all:.2f} s | {result['hmg_cam_ratio']} | ≤ 5 | "
          f"{result['hmg_cam_tokens_per_s']:,} |")


if __name__ == "__main__":
    main()
