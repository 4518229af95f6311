"""Long texts in request rows, stored once: split at paragraph boundaries, each chunk kept by its hash.

An AgentWrite request repeats the instruction, the plan and everything written so far, so storing
each request's messages whole grows with the square of a sample's sections. Splitting a long text
at blank lines (greedily merged into chunks of at least MIN_CHUNK characters, from the start)
makes the text so far of request k+1 the same chunks as request k's plus one or two new ones at the
end, so a sample's requests store each paragraph about once. A request row then keeps the list of
its chunks' hashes in place of the text; `expand` puts the text back.

Content-defined chunking at paragraph boundaries, rather than a template id with variables, keeps
this independent of the writers: Self-Lengthen's answers so far, a judge's material and a rendered
completions prompt are stored the same way.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Callable

MIN_TEXT = 1024   # shorter texts stay inline: a chunk reference would cost about as much
MIN_CHUNK = 512
_BOUNDARY = re.compile(r"(?<=\n\n)")
REF = "$chunks"


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def split(text: str) -> list[str]:
    """Chunks that join back to `text`, each ending at a paragraph boundary (but the last)."""
    chunks: list[str] = []
    current = ""
    for piece in _BOUNDARY.split(text):
        current += piece
        if len(current) >= MIN_CHUNK:
            chunks.append(current)
            current = ""
    if current:
        chunks.append(current)
    return chunks


def compact(body: dict[str, Any], add_chunk: Callable[[str, str], None]) -> dict[str, Any]:
    """`body` with each long message content (and a long completions prompt) replaced by
    {"$chunks": [hash, ...]}; `add_chunk(hash, text)` is called for every chunk."""

    def ref(text: Any) -> Any:
        if not isinstance(text, str) or len(text) < MIN_TEXT:
            return text
        hashes = []
        for chunk in split(text):
            digest = text_hash(chunk)
            add_chunk(digest, chunk)
            hashes.append(digest)
        return {REF: hashes}

    out = dict(body)
    if "messages" in out:
        out["messages"] = [{**m, "content": ref(m.get("content"))} for m in out["messages"]]
    if "prompt" in out:
        out["prompt"] = ref(out["prompt"])
    return out


def expand(doc: dict[str, Any], texts: dict[str, str]) -> dict[str, Any]:
    """The request as it was sent, from its compacted row and the chunk texts by hash."""

    def text(value: Any) -> Any:
        if isinstance(value, dict) and REF in value:
            return "".join(texts[h] for h in value[REF])
        return value

    out = dict(doc)
    if "messages" in out:
        out["messages"] = [{**m, "content": text(m.get("content"))} for m in out["messages"]]
    if "prompt" in out:
        out["prompt"] = text(out["prompt"])
    return out


def refs(doc: dict[str, Any]) -> list[str]:
    """Every chunk hash a compacted request refers to."""
    values = [m.get("content") for m in doc.get("messages", [])] + [doc.get("prompt")]
    return [h for v in values if isinstance(v, dict) and REF in v for h in v[REF]]
