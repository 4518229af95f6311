"""Everything a build reads before it starts, validated in one place.

The CLI calls this to refuse bad input before Prefect starts; the flow calls it again because a
deployment runs the flow without the CLI. What a build may be asked to do (one writer for
`--until-accepted`, which cannot be sharded) is decided here, once, for both.
"""

from __future__ import annotations

from pathlib import Path

from longform.build.shards import check_shards
from longform.config import Settings, load_settings
from longform.errors import LongformError
from longform.dataset.export import check_out_dir
from longform.paths import ensure_writable_file
from longform.prompts import Prompt, load_prompts, required_prompts_path


def load_build_inputs(config: Path, *, prompts: Path | str | None = None, db: Path | str | None = None,
                      limit: int | None = None, shards: int | None = None,
                      until_accepted: int | None = None) -> tuple[Settings, Path, list[Prompt]]:
    """(settings, prompts file, prompts): config and prompts parsed, the database and output directory
    writable, the build's shape possible. `shards` overrides [build] shards."""
    settings = load_settings(config, **{"build.prompts": prompts, "build.db": db})
    if shards is not None:
        settings = settings.model_copy(update={"build": settings.build.model_copy(update={"shards": shards})})
    check_build_shape(settings, config, until_accepted)
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


def check_build_shape(settings: Settings, config: Path, until_accepted: int | None) -> None:
    check_shards(0, settings.build.shards)
    if not until_accepted:
        return
    if len(settings.writers.enabled) > 1:
        # Its candidate order and budget are one writer's; two would need a policy for splitting them.
        raise LongformError(f"{config}: --until-accepted runs one writer; [writers] enabled lists"
                            f" {', '.join(settings.writers.enabled)} (enable one, or drop --until-accepted)")
    if settings.build.shards > 1:
        raise LongformError("--until-accepted counts accepted samples across the whole build; it cannot be"
                            " sharded (drop --shards or [build] shards)")
