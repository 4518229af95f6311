"""`longform`: the command line. Each module registers its commands on one Typer app (app.py)."""

from longform.cli import build, dataset, inspection  # noqa: F401  (registers the commands)
from longform.cli.app import app


def main() -> None:
    app()
