"""pof's own error type: a mistake a user can make (a bad value, path, file or config).

The CLI turns a :class:`PofError` into one line on stderr and exit code 2; any other
exception is a bug and keeps its traceback. ``PofError`` is a ``ValueError``, so library
callers that catch ``ValueError`` keep working.
"""

from __future__ import annotations


class PofError(ValueError):
    """A user mistake; the message is one line that names the value, path or file."""

    def __init__(self, msg: object) -> None:
        super().__init__(" ".join(str(msg).split()))


class ConfigError(PofError):
    """A training config or command-line value of the wrong type or out of range."""


class DataError(PofError):
    """A data set that is missing, malformed, corrupt or does not fit the model."""


class CheckpointError(PofError):
    """A checkpoint that is missing, truncated, corrupt or not a pof checkpoint."""


def one_line(e: BaseException | str) -> str:
    """``e``'s message on one line (its type name if it has none)."""
    return " ".join(str(e).split()) or type(e).__name__
