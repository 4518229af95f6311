"""The request cache key: a content hash of everything that determines an answer.

Model, messages, sampling parameters, response format and seed are all in the body that is sent.
The sample index and the template text are added because two requests with identical bodies can
still be meant as different draws (sample 0 and sample 1 of one prompt at temperature 0.7 with no
seed support), and because a changed template must invalidate answers even where it happens to
render the same messages for some input.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def request_key(body: dict[str, Any], *, sample_index: int, template: str) -> str:
    material = {"body": body, "sample_index": sample_index, "template": template}
    canonical = json.dumps(material, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
