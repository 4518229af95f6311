"""What the engine needs from a database, and nothing more: its request cache and its record of
every request sent. The store (longform/store) provides it; the engine never imports the store,
so it runs and is tested against anything with these two methods."""

from __future__ import annotations

from typing import Any, Protocol


class RequestLedger(Protocol):
    def cached_answer(self, key: str) -> dict[str, Any] | None:
        """The stored answer to the request with this cache key (`response_text`, `finish_reason`,
        `tokens_in`, `tokens_out`, `logprobs`), or None. Failures are never answers."""

    def add_request(self, row: dict[str, Any], body: dict[str, Any]) -> None:
        """Record one request that reached the network, answered or failed, with the body sent."""
