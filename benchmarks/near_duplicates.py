"""Near-duplicate prompt detection at 100k prompts: longform's blocked search against rapidfuzz's
all-pairs `cdist`, in the same run.

All-pairs is the exact answer but quadratic, so it runs on a 5k subset; the blocked search runs on
the same subset (speed-up and recall against the exact answer) and then on all 100k (time, and
recall of the near-copies we planted).

    python benchmarks/near_duplicates.py [--n 100000] [--subset 5000]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
from rapidfuzz import fuzz
from rapidfuzz.process import cdist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from judges.filters import _units, near_duplicates  # noqa: E402

THRESHOLD = 90.0


def synthetic_prompts(n: int, seed: int = 0) -> tuple[list[str], set[int]]:
    """Instructions over a Zipfian 20k-word vocabulary; 3% are edited copies of an earlier one."""
    rng = random.Random(seed)
    vocab = [f"{rng.choice('bcdfghklmnprstvw')}{rng.choice('aeiou')}{i:x}" for i in range(20000)]
    weights = 1 / np.arange(1, len(vocab) + 1)
    cum = np.cumsum(weights / weights.sum())
    np_rng = np.random.default_rng(seed)
    texts, planted = [], set()
    for i in range(n):
        if i > 10 and rng.random() < 0.03:
            words = texts[rng.randrange(i)].split()
            for _ in range(rng.choice((0, 1))):          # one word edited, or none (case/punctuation)
                words[rng.randrange(len(words))] = rng.choice(vocab)
            text = " ".join(words)
            text = text.capitalize() if rng.random() < 0.5 else text + "."
            planted.add(i)
        else:
            k = rng.randint(18, 40)
            ids = np.searchsorted(cum, np_rng.random(k))
            text = "Write a detailed essay on " + " ".join(vocab[j] for j in ids)
        texts.append(text)
    return texts, planted


def all_pairs(texts: list[str]) -> set[int]:
    normalized = [" ".join(_units(t)) for t in texts]
    scores = cdist(normalized, normalized, scorer=fuzz.ratio, score_cutoff=THRESHOLD, workers=1, dtype=np.uint8)
    found = set()
    for i in range(len(texts)):
        if scores[i, :i].any():
            found.add(i)
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--subset", type=int, default=5_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    texts, planted = synthetic_prompts(args.n)
    subset = texts[:args.subset]

    t0 = time.perf_counter()
    exact = all_pairs(subset)
    t_all_pairs = time.perf_counter() - t0
    t0 = time.perf_counter()
    blocked = set(near_duplicates(subset, THRESHOLD))
    t_blocked_subset = time.perf_counter() - t0
    t0 = time.perf_counter()
    full = set(near_duplicates(texts, THRESHOLD))
    t_full = time.perf_counter() - t0

    result = {
        "machine": f"{platform.processor() or platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
        "threshold": THRESHOLD,
        "subset": {"n": args.subset, "all_pairs_s": round(t_all_pairs, 3), "blocked_s": round(t_blocked_subset, 3),
                   "speedup": round(t_all_pairs / t_blocked_subset, 1),
                   "recall_vs_all_pairs": len(blocked & exact) / len(exact) if exact else None,
                   "extra_vs_all_pairs": len(blocked - exact)},
        "full": {"n": args.n, "blocked_s": round(t_full, 2), "found": len(full), "planted": len(planted),
                 "planted_recall": len(full & planted) / len(planted),
                 "all_pairs_estimate_s": round(t_all_pairs * (args.n / args.subset) ** 2, 0)},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "near_duplicates.json").write_text(json.dumps(result, indent=2) + "\n")
    s, f = result["subset"], result["full"]
    print("| near-duplicate prompts (ratio ≥ 90) | n | time | vs all-pairs | recall |")
    print("|---|---|---|---|---|")
    print(f"| rapidfuzz cdist, all pairs | {s['n']:,} | {s['all_pairs_s']:.2f} s | 1× | 100% (exact) |")
    print(f"| longform, prefix-filtered | {s['n']:,} | {s['blocked_s']:.2f} s | {s['speedup']}× faster |"
          f" {s['recall_vs_all_pairs']:.1%} of all-pairs |")
    print(f"| longform, prefix-filtered | {f['n']:,} | {f['blocked_s']:.1f} s | all-pairs ≈ {f['all_pairs_estimate_s']:,.0f} s"
          f" (extrapolated) | {f['planted_recall']:.1%} of planted copies |")


if __name__ == "__main__":
    main()
