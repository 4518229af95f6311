"""The import-linter contract (pyproject.toml, run by `make test`) covers every core module."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_core_module_is_in_the_core_contract():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    [core] = [c for c in config["contracts"] if c["type"] == "forbidden"]
    layers = [c for c in config["contracts"] if c["type"] == "layers"][0]["layers"]
    above = {name for layer in layers for name in layer.split(" | ") if name.startswith("longform.")}
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts) for p in (ROOT / "longform").glob("*.py")}
    modules = {m for m in modules if m != "longform.__init__"} | {"longform.engine"}
    assert modules - above == set(core["source_modules"]), "add new core modules to the contract in pyproject.toml"
    assert set(core["forbidden_modules"]) >= above | {"flows", "writers", "judges"}
