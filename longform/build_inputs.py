"""Everything a build reads before it starts, validated in one place.

The CLI calls this to refuse bad input before Prefect starts; the flow calls it again because a
deployment runs the flow without the CLI.
"""

from __future__ import annotations

from pathlib import Path

from longform.config import Settings, load_settings
from longform.export import check_out_dir
from longform.prompts import Prompt, load_prompts, required_prompts_path


def load_build_inputs(config: Path, *, prompts: Path | str | None = None, db: Path | str | None = None,
                      limit: int | None = None) -> tuple[Settings, Path, list[Prompt]]:
    """(settings, prompts file, prompts): config and prompts parsed, the output directory writable."""
    settings = load_settings(config, **{"build.prompts": prompts, "build.db": db})
    prompts_path = required_prompts_path(settings, config)
    prompt_list = load_prompts(prompts_path, limit)
    if settings.export.enabled:
        check_out_dir(settings.build.out_dir)
    return settings, prompts_path, prompt_list
