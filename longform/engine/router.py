"""Which endpoint a request goes to: the same one for every request of a sample, while it is healthy.

AgentWrite sends a sample's sections one after another, each prompt repeating the instruction,
the plan and everything written so far. A server with automatic prefix caching (vLLM, SGLang,
llama.cpp) computes that shared prefix once, but only if the next section reaches the same
server; a round-robin balancer throws that away on every request. So a sample is pinned to an
endpoint at its first request and stays there while the endpoint is up.

The first choice is weighted rendezvous hashing on the sample id (Thaler & Ravishankar): every
endpoint scores the id, the highest wins, weights scale each endpoint's share, and removing an
endpoint moves only the samples that were on it. Hashing alone can overload one endpoint by
chance, so the choice has a bounded load (Mirrokni, Thorup & Zadimoghaddam, "Consistent Hashing
with Bounded Loads", 2018): an endpoint takes a new sample only while its load is under
`LOAD_BOUND` times its weighted share of the current load; otherwise the sample goes to the next
endpoint in its rendezvous order, and if every endpoint is over, to the least loaded one.

Why 1.25: the paper shows that with a bound of 1 + ε no endpoint exceeds its share by more than
the factor while the expected number of samples moved per arrival stays O(1/ε²); HAProxy
ships the same algorithm (`hash-balance-factor`) and suggests 125 for the same trade-off. Tighter
(1.05) would send many samples away from their hash choice and make a restarted build land on
other servers than the first attempt; looser (2.0) would let one server queue twice its share,
which at the tail of a build is time every other server sits idle.

Only new samples are placed this way; a pinned sample stays where its prefix is cached even when
its endpoint is busy (its requests wait in that endpoint's queue), and moves only when the
endpoint goes down.
"""

from __future__ import annotations

import hashlib
import math
from typing import Protocol, Sequence

LOAD_BOUND = 1.25


class Routable(Protocol):
    index: int
    weight: float

    def load(self) -> int: ...            # requests in flight plus waiting for a slot
    def available(self) -> bool: ...      # may get new work now (see health.py)
    def healthy(self) -> bool: ...


def _score(key: str, index: int, weight: float) -> float:
    """Weighted rendezvous score: -w / ln(u), u uniform in (0, 1) from the hash of (key, endpoint)."""
    digest = hashlib.blake2b(f"{index}\x1f{key}".encode(), digest_size=8).digest()
    u = (int.from_bytes(digest, "big") + 1) / (2 ** 64 + 2)
    return -weight / math.log(u)


POLICIES = ("affinity", "least_loaded", "round_robin")


class Router:
    """`policy`: "affinity" (the default, above); "least_loaded" and "round_robin" ignore the sample
    and exist to measure what affinity saves (benchmarks/fleet_routing.py)."""

    def __init__(self, endpoints: Sequence[Routable], policy: str = "affinity"):
        if policy not in POLICIES:
            raise ValueError(f"routing policy {policy!r}: one of {', '.join(POLICIES)}")
        self.endpoints = list(endpoints)
        self.policy = policy
        self._turn = 0
        # Sample id → endpoint index. Kept for the whole build (about 100 bytes a sample, 10 MB
        # for 100k samples): the engine does not know when a sample has sent its last request.
        self._pins: dict[str, int] = {}
        self.spilled = 0

    def pick(self, affinity: str | None, exclude: frozenset[int] = frozenset()) -> tuple[Routable, bool]:
        """(endpoint, whether it is a real choice): False when nothing healthy was left to pick, so the
        caller should back off before sending (the endpoint is probably down)."""
        candidates = [e for e in self.endpoints if e.index not in exclude and e.available()]
        if not candidates:
            # Every other endpoint is down or already failed this request: fall back to any that
            # may be probed, then to all, and let the retry policy's backoff pace it.
            fallback = [e for e in self.endpoints if e.available()] or self.endpoints
            return min(fallback, key=lambda e: e.load() / e.weight), False
        if self.policy == "round_robin":
            self._turn += 1
            return candidates[self._turn % len(candidates)], True
        if affinity is None or self.policy == "least_loaded":
            return min(candidates, key=lambda e: e.load() / e.weight), True
        pinned = self._pins.get(affinity)
        if pinned is not None:
            endpoint = self.endpoints[pinned]
            if endpoint in candidates and endpoint.healthy():
                return endpoint, True
        chosen = self._place(affinity, candidates)
        self._pins[affinity] = chosen.index
        return chosen, True

    def _place(self, affinity: str, candidates: list[Routable]) -> Routable:
        ranked = sorted(candidates, key=lambda e: -_score(affinity, e.index, e.weight))
        if len(ranked) == 1:
            return ranked[0]
        total_load = sum(e.load() for e in ranked) + 1  # the new sample's first request included
        total_weight = sum(e.weight for e in ranked)
        for endpoint in ranked:
            if endpoint.load() + 1 <= math.ceil(LOAD_BOUND * total_load * endpoint.weight / total_weight):
                if endpoint is not ranked[0]:
                    self.spilled += 1
                return endpoint
        self.spilled += 1
        return min(ranked, key=lambda e: e.load() / e.weight)
