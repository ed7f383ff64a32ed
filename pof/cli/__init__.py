"""The ``pof`` command: train, prune, export, eval, sweep, finetune, demo.

A user mistake (a :class:`~pof.errors.PofError`: unknown model, missing path, bad value,
corrupt file, unwritable output) ends with one line on stderr and exit code 2; any other
exception is a bug and keeps its traceback (``POF_DEBUG=1`` shows one for mistakes too).
Heavy modules are imported inside :func:`main`, so Ctrl-C at any time is one line.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pof`` command; returns the exit code."""
    command = "pof"
    try:
        from ..errors import PofError
        from .parser import build_parser

        args = build_parser().parse_args(argv)
        command = f"pof {args.command}"
        try:
            args.func(args)
        except PofError as e:
            if os.environ.get("POF_DEBUG"):
                raise
            print(f"{command}: error: {e}", file=sys.stderr)
            return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted (resume a training run with --resume)", file=sys.stderr)
        return 130
    return 0
