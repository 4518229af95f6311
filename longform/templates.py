"""Prompt templates kept as files next to the code that fills them (writers/templates, judges/templates).

A template's identity (name and content hash) is part of every request key it produces, so editing
a template invalidates exactly the cached answers it shaped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from string import Template as _Template


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    text: str

    @property
    def identity(self) -> str:
        return f"{self.name}@{hashlib.sha256(self.text.encode('utf-8')).hexdigest()[:16]}"

    def render(self, **values: object) -> str:
        # substitute, not safe_substitute: a missing value is a bug, not a prompt with "$x" in it.
        return _Template(self.text).substitute({k: str(v) for k, v in values.items()})


@cache
def load(directory: Path, name: str) -> PromptTemplate:
    return PromptTemplate(name, (directory / f"{name}.txt").read_text(encoding="utf-8").strip())
