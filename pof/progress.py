"""Progress bars that also show off a terminal.

:func:`progress_bar` is ``tqdm`` on a terminal. Elsewhere (a log file, CI, ``nohup``, a
job scheduler) a bar would be invisible or a mess of carriage returns, so a task that runs
longer than ``delay_s`` prints one plain line on stdout at most every ``every_s`` seconds
and one when it ends; a shorter task prints nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm.auto import tqdm  # a widget in notebooks

EVERY_S = 30.0  # off a terminal: at most a line this often,
DELAY_S = 5.0  # once a task has run this long
LINE = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed} elapsed, ~{remaining} left]"
LINE_NO_TOTAL = "{desc}: {n_fmt} [{elapsed} elapsed]"


class _Lines:
    """The file tqdm writes to off a terminal: each refresh becomes one line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.last = stream, ""

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line and line != self.last:  # (closing redraws the last state)
            self.stream.write(line + "\n")
            self.last = line

    def flush(self) -> None:
        self.stream.flush()


def on_terminal() -> bool:
    """Whether progress bars are visible: stderr (where tqdm draws) is a terminal, or this
    runs in a Jupyter kernel (a widget)."""
    return "ipykernel" in sys.modules or bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress_bar(iterable: Iterable | None = None, *, show: bool = True,
                 every_s: float | None = None, delay_s: float | None = None,
                 **kw: Any) -> tqdm:
    """A ``tqdm`` bar (``kw`` are tqdm's) on a terminal; off one, a line at most every
    ``every_s`` seconds (default :data:`EVERY_S`) and at the end, once the task has run
    ``delay_s`` seconds (default :data:`DELAY_S`); ``show=False``: nothing."""
    if not show:
        return tqdm(iterable, disable=True, **kw)
    if on_terminal():
        return tqdm(iterable, **kw)
    total = kw.get("total")
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    kw.update(file=_Lines(sys.stdout), mininterval=EVERY_S if every_s is None else every_s,
              delay=DELAY_S if delay_s is None else delay_s, leave=True,
              bar_format=LINE if total else LINE_NO_TOTAL)
    return tqdm(iterable, **kw)
