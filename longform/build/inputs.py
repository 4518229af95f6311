"""Everything a build reads before it starts, validated in one place.

The CLI calls this to refuse bad input before Prefect starts; the flow calls it again because a
deployment runs the flow without the CLI.
"""

from __future__ import annotations

from pathlib import Path

from longform.config import Settings, load_settings
from longform.dataset.export import check_out_dir
from longform.paths import ensure_writable_file
from longform.prompts import Prompt, load_prompts, required_prompts_path


def load_build_inputs(config: Path, *, prompts: Path | str | None = None, db: Path | str | None = None,
                      limit: int | None = None) -> tuple[Settings, Path, list[Prompt]]:
    """(settings, prompts file, prompts): config and prompts parsed, the database and output directory writable."""
    settings = load_settings(config, **{"build.prompts": prompts, "build.db": db})
    prompts_path = required_prompts_path(settings, config)
    prompt_list = load_prompts(prompts_path, limit)
    # Before Prefect or a model starts: a database that cannot be created fails in one line, now.
    ensure_writable_file(settings.build.db, "database")
    if settings.gateau.enabled:
        from longform.models.hf_model import check_available

        for model in filter(None, (settings.gateau.model, settings.gateau.short_model)):
            check_available(model)
    if settings.export.enabled:
        check_out_dir(settings.build.out_dir)
    return settings, prompts_path, prompt_list
