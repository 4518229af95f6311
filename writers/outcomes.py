"""What a writer returns when a sample cannot be written: a row with a reason, never an exception
and never text (failures are data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from longform.clock import now
from longform.ids import row_id
from longform.prompts import Prompt


@dataclass(frozen=True)
class WriteFailure:
    failed: ClassVar[bool] = True
    sample_id: str
    prompt: Prompt
    stage: str
    reason: str
    detail: str
    key: str | None = None
    # Rows recorded even though the sample failed (table → rows), e.g. Self-Lengthen's steps.
    extra: dict = field(default_factory=dict, compare=False)

    def extra_rows(self) -> dict[str, list[dict]]:
        return self.extra

    def failure_row(self, run_id: str) -> dict:
        # One row per run, stage and sample: a resumed run that fails the same way adds nothing.
        return {"failure_id": row_id(run_id, self.stage, self.sample_id), "run_id": run_id, "stage": self.stage,
                "prompt_id": self.prompt.prompt_id, "sample_id": self.sample_id, "key": self.key,
                "reason": self.reason, "detail": self.detail, "created_at": now()}
