"""The engine: every call to a model over HTTP goes through it (models run in-process by transformers,
for GATEAU, training and `longform eval --model`, do not).

Writers and judges hand it a `ChatRequest` and await a `Completion`. It answers from the request
cache when it can; otherwise it sends to one of its endpoints (router.py: a sample's requests stay
on one server while it is healthy, so its prefix cache is reused) under that endpoint's adaptive
concurrency limit, retrying what is transient (retry.py) — on another endpoint when there is one,
since the failure was that server's — and records every request that reached the network,
answered or failed, with the endpoint that answered, in its ledger (ledger.py: the store, seen
through a two-method interface).

Modules: endpoint.py (a server as the engine sees it), messages.py (requests, completions, counters), dialects.py (what servers differ in on
the wire), lanes.py (one endpoint), router.py, throttle.py, retry.py, health.py, breaker.py,
cache_key.py, ledger.py, engine.py (the engine itself).

All endpoints of one engine serve the same model: the request body (and so the cache key) does
not depend on which server answers, and a rerun finds its answers whichever server it lands on.
"""

from longform.engine.endpoint import Endpoint
from longform.engine.engine import Engine
from longform.engine.lanes import public_url
from longform.engine.messages import ChatRequest, Completion, RequestFailed, StageStats, TokenLogprobs

__all__ = ["ChatRequest", "Completion", "Endpoint", "Engine", "RequestFailed", "StageStats", "TokenLogprobs", "public_url"]
