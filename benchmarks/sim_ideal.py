"""The shortest possible wall time for a workload on the simulated server, and how close a run came.

A workload is a set of chains: each sample's requests (plan, sections, its judgment) in the order
they were sent, each costing what the server model charges for it. No client can beat
`max(longest chain, total work ÷ slots)`; efficiency is that bound ÷ the run's actual span.
`schedule_s` is a makespan that is actually reachable (critical-path-first list scheduling), so
the true optimum lies between the two.
"""

from __future__ import annotations

import heapq
from collections import defaultdict


def chains(log: list[dict]) -> list[list[float]]:
    """Per task tag, the cost of each completed request in the order they arrived."""
    by_tag: dict[str, list[dict]] = defaultdict(list)
    for entry in log:
        if not entry["aborted"]:
            by_tag[entry["tag"]].append(entry)
    return [[e["cost_s"] for e in sorted(entries, key=lambda e: e["arrived"])] for entries in by_tag.values()]


def lower_bound(work: list[list[float]], slots: int) -> float:
    longest = max((sum(c) for c in work), default=0.0)
    total = sum(sum(c) for c in work)
    return max(longest, total / slots)


def list_schedule(work: list[list[float]], slots: int) -> float:
    """Makespan when a free slot always takes the ready request whose chain has the most work left."""
    remaining = [sum(c) for c in work]
    ready = [(-remaining[i], i, 0) for i in range(len(work)) if work[i]]
    heapq.heapify(ready)
    running: list[tuple[float, int, int]] = []  # (ends_at, chain, step)
    clock = 0.0
    while ready or running:
        while ready and len(running) < slots:
            _, i, step = heapq.heappop(ready)
            heapq.heappush(running, (clock + work[i][step], i, step))
        clock, i, step = heapq.heappop(running)
        remaining[i] -= work[i][step]
        if step + 1 < len(work[i]):
            heapq.heappush(ready, (-remaining[i], i, step + 1))
    return clock


def efficiency(log: list[dict], slots: int) -> dict:
    done = [e for e in log if not e["aborted"]]
    if not done:
        return {"requests": 0}
    work = chains(log)
    span = max(e["ended"] for e in done) - min(e["arrived"] for e in done)
    bound = lower_bound(work, slots)
    busy = sum(e["cost_s"] * e["done"] for e in log)
    return {
        "requests": len(done),
        "samples": len(work),
        "tokens_in": sum(e["tokens_in"] for e in done),
        "tokens_out": sum(e["tokens_out"] for e in done),
        "actual_s": round(span, 3),
        "ideal_s": round(bound, 3),
        "schedule_s": round(list_schedule(work, slots), 3),
        "longest_chain_s": round(max(sum(c) for c in work), 3),
        "work_over_slots_s": round(sum(sum(c) for c in work) / slots, 3),
        "slot_use": round(busy / (slots * span), 4) if span else None,
        "efficiency": round(bound / span, 4) if span else None,
    }
