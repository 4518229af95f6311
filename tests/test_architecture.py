"""What docs/ARCHITECTURE.md promises about the tree, checked: the import-linter contracts
(pyproject.toml, run by `make test`) cover every core module, SQL lives only in the store, one
clock makes timestamps and ids, and stored reasons come from their enums."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("flows", "writers", "judges", "longform")


def _contract(config: dict, name: str) -> dict:
    [found] = [c for c in config["contracts"] if c["name"] == name]
    return found


def test_every_core_module_is_in_the_core_contracts():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    above = {"longform.cli", "longform.viewer"}
    primitives = {f"longform.{p.stem}" for p in (ROOT / "longform").glob("*.py") if p.stem != "__init__"}
    packages = {f"longform.{p.parent.name}" for p in (ROOT / "longform").glob("*/__init__.py")} - above
    core = _contract(config, "the core imports nothing above it")
    assert set(core["source_modules"]) == primitives | packages, "add new core modules to pyproject.toml's contracts"
    assert set(core["forbidden_modules"]) >= above | {"flows", "writers", "judges"}
    inner = _contract(config, "inside the core: build → models → dataset → engine | store")
    assert {name for layer in inner["layers"] for name in layer.split(" | ")} == packages, \
        "place every core package in the core's layers"
    assert set(_contract(config, "the core's primitives import none of its packages")["source_modules"]) == primitives


# A string literal that starts an SQL statement, or a call that runs one.
SQL_TEXT = re.compile(r"""(?:^|[(\[,=]\s*|\bf)["'](?:SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|ATTACH|WITH)\s""", re.I)
SQL_CALL = re.compile(r"\.(?:query|execute|executemany|sql)\(|\bread_query\(")
# The store owns SQL; `longform query` passes the user's own through.
ALLOWED = {ROOT / "longform" / "store", ROOT / "longform" / "cli" / "inspection.py"}


def test_sql_lives_only_in_the_store():
    found = []
    for top in PRODUCT:
        for path in (ROOT / top).rglob("*.py"):
            if any(path == a or a in path.parents for a in ALLOWED):
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#")[0]
                if SQL_TEXT.search(code.strip()) or SQL_CALL.search(code):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "SQL outside longform/store:\n" + "\n".join(found)


def test_the_sql_check_finds_sql():
    # The check above must be able to fail.
    assert SQL_TEXT.search('rows = store.query("SELECT 1")'.split("query(")[1])
    assert SQL_CALL.search('_, rows = store.query("x")')
    assert SQL_TEXT.search("f\"select * from runs where run_id = '{run}'\"")
    assert not SQL_TEXT.search('"selected": selected')


# Wall-clock reads that make a timestamp or an id; `longform/clock.py` is the one place for them.
CLOCK_CALL = re.compile(r"\b(?:datetime\.(?:now|utcnow|today)|time\.(?:strftime|localtime|gmtime))\(")


def test_timestamps_and_event_ids_come_from_one_clock():
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for top in PRODUCT for path in (ROOT / top).rglob("*.py") if path != ROOT / "longform" / "clock.py"
             for n, line in enumerate(path.read_text().splitlines(), 1) if CLOCK_CALL.search(line.split("#")[0])]
    assert not found, "use longform.clock.now() / timed_id():\n" + "\n".join(found)
    assert CLOCK_CALL.search("stamp = time.strftime('%Y')") and CLOCK_CALL.search("datetime.now(timezone.utc)")


def test_stored_reasons_are_named_only_in_their_enums():
    """A reason written as a bare string could drift from the one the viewer explains."""
    from longform.reasons import FailureReason, LengthStop

    values = {v.value for v in (*LengthStop, *FailureReason)}
    literal = re.compile(r"""["']([a-z_]+)["']""")
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for top in PRODUCT for path in (ROOT / top).rglob("*.py") if path != ROOT / "longform" / "reasons.py"
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if any(m in values for m in literal.findall(line.split("#")[0].split(" -- ")[0]))]
    assert not found, "use longform.reasons:\n" + "\n".join(found)
