"""A seam between a running build and whoever watches it.

The CLI installs a reporter that draws a progress bar; a scheduled deployment runs with the
default, which reports nothing. The build only ever calls these methods.
"""

from __future__ import annotations

from typing import Protocol


class Reporter(Protocol):
    def start(self, total_samples: int, engine: object) -> None: ...
    def sample_done(self, ok: bool) -> None: ...
    def note(self, message: str) -> None: ...
    def stop(self) -> None: ...


class _Silent:
    def start(self, total_samples: int, engine: object) -> None:
        pass

    def sample_done(self, ok: bool) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def stop(self) -> None:
        pass


_current: Reporter = _Silent()


def set_reporter(reporter: Reporter | None) -> None:
    global _current
    _current = reporter or _Silent()


def reporter() -> Reporter:
    return _current
