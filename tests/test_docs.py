"""The front door and the reference stay true: generated pages match the code, MkDocs builds them
strictly, the README is short with a table of contents that leads somewhere, and the shipped real
config is valid."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_reference_pages_match_the_code():
    done = subprocess.run([sys.executable, "docs/generate.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_docs_build_strictly(tmp_path):
    """--strict: a broken link or anchor, or a page left out of the nav, fails the build."""
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "config" / "index.html").exists()


def _anchor(heading: str) -> str:
    # GitHub's rule: lower case, punctuation dropped, spaces to hyphens.
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_readme_is_a_front_page_whose_links_lead_somewhere():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    anchors = {_anchor(h) for h in re.findall(r"^#{1,3} (.+)$", text, flags=re.M)}
    contents = next(line for line in text.split("\n\n") if line.startswith("**Contents:**"))
    targets = re.findall(r"\]\(#([^)]+)\)", contents)
    assert len(targets) >= 6 and set(targets) <= anchors, set(targets) - anchors
    for link in re.findall(r"\]\(((?:docs|configs)/[^)#]+)", text):
        assert (ROOT / link).exists(), link


def test_the_readme_names_no_command_a_fresh_install_lacks_on_its_path():
    """After `make demo`, `prefect` and `longform` live in .venv/bin, not on PATH."""
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```(?:bash|sh)\n(.*?)```", path.read_text(), flags=re.S):
            for line in block.splitlines():
                assert not re.match(r"\s*(prefect|longform) ", line), f"{path.name}: {line}"


def test_the_real_config_and_its_prompts_are_valid():
    from longform.config import load_settings
    from longform.length_reader import spec_for
    from longform.prompts import load_prompts

    settings = load_settings(ROOT / "configs" / "real.toml")
    assert settings.endpoint.kind == "openai" and settings.build.samples_per_prompt >= 2
    assert settings.judges.rubric and settings.judges.pairwise and settings.gateau.enabled
    assert settings.filters.required == type(settings.filters)().required      # the default filters
    prompts = load_prompts(ROOT / settings.build.prompts)
    kinds = {spec_for(p, settings.agentwrite.default_words).kind for p in prompts}
    assert len(prompts) >= 10 and {"at_most", "at_least", "range", "about"} <= kinds
    assert all((ROOT / f).is_file() for f in settings.export.decontaminate)
