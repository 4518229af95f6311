"""The one exception type a user should ever see: a one-line message naming what is wrong."""


class LongformError(Exception):
    """Bad input or an unusable environment. The CLI prints `str(err)` and exits non-zero."""


def first_line(e: BaseException, empty: str | None = None) -> str:
    """The first line of an exception's message, for one-line errors; `empty` (default: the
    exception's type name) when it has none."""
    text = str(e).strip()
    return text.splitlines()[0] if text else (empty if empty is not None else type(e).__name__)
