"""Text primitives shared by writers and judges: paragraphs, quoting a text so it cannot pose as
instructions, and the JSON object in a model's answer. (The length counters are in lengths.py.)"""

from __future__ import annotations

import hashlib
import json
import re


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, stripped, empty ones dropped."""
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def quote(label: str, text: str) -> str:
    """`text` between markers it cannot forge: the marker carries a hash of the text itself."""
    tag = f"{label} {hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]}"
    return f"<<<BEGIN {tag}>>>\n{text}\n<<<END {tag}>>>"


def json_object(text: str) -> dict | None:
    """The JSON object in a model's answer: from its first `{` to its last `}` (models wrap JSON in
    prose or code fences), or None when that is not an object. Raw newlines inside strings are
    allowed: small models write them."""
    match = re.search(r"\{.*\}", text, re.DOTALL)
    if not match:
        return None
    try:
        value = json.loads(match.group(0), strict=False)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
