"""Text primitives shared by writers and judges: paragraphs, and quoting a text so it cannot pose
as instructions. (The length counter is in lengths.py.)"""

from __future__ import annotations

import hashlib
import re


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, stripped, empty ones dropped."""
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def quote(label: str, text: str) -> str:
    """`text` between markers it cannot forge: the marker carries a hash of the text itself."""
    tag = f"{label} {hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]}"
    return f"<<<BEGIN {tag}>>>\n{text}\n<<<END {tag}>>>"
