"""The one exception type a user should ever see: a one-line message naming what is wrong."""


class LongformError(Exception):
    """Bad input or an unusable environment. The CLI prints `str(err)` and exits non-zero."""
