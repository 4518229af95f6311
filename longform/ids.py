"""Deterministic ids, so a rerun of the same work finds the same rows."""

from __future__ import annotations

import hashlib
import json
from typing import Callable

from longform.prompts import Prompt


class SampleIds:
    """A writer's sample ids: a hash of its fingerprint (everything besides the prompt that shapes a
    sample), the prompt and the sample index. Computed once per sample: every request asks for it
    (it is the routing key and the request's provenance)."""

    def __init__(self, fingerprint: Callable[[], dict]):
        self._fingerprint = fingerprint
        self._known: dict[tuple[str, int], str] = {}

    def __call__(self, prompt: Prompt, sample_index: int) -> str:
        known = self._known.get((prompt.prompt_id, sample_index))
        if known is None:
            material = [self._fingerprint(), prompt.prompt_id, prompt.instruction, prompt.target_words, sample_index]
            if prompt.min_words or prompt.max_words:  # only when set, so ids from before bounds stay the same
                material.append([prompt.min_words, prompt.max_words])
            digest = hashlib.sha256(json.dumps(material, sort_keys=True, ensure_ascii=False).encode("utf-8"))
            known = self._known[(prompt.prompt_id, sample_index)] = "s-" + digest.hexdigest()[:20]
        return known


def row_id(*parts: object) -> str:
    """A deterministic row id: 24 hex digits of the SHA-256 of its parts joined by "|" (failure,
    selection, Self-Lengthen step and self-instruct candidate ids), so a repeated write is the same row."""
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:24]


def content_hash(material: object, length: int = 64) -> str:
    """The first `length` hex digits of the SHA-256 of `material` as canonical JSON: an id for what a
    result was made from (a judgment's inputs, a GATEAU measure's, an adapter's data and settings),
    so the same inputs find the same row and new inputs never find a stale one."""
    text = json.dumps(material, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]
