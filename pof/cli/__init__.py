"""The ``pof`` command: train, prune, export, eval, sweep, finetune, demo.

A user mistake (a :class:`~pof.errors.PofError`: unknown model, missing path, bad value,
corrupt file, unwritable output) ends with one line on stderr and exit code 2; any other
exception is a bug and keeps its traceback (``POF_DEBUG=1`` shows one for mistakes too).
Ctrl-C ends the command at once with one line and exit code 130: nothing is half-written
(writes are atomic; a temp file left behind is swept by the next write) and a training
run continues with ``--resume``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def _on_ctrl_c(command: list[str], pid: int):
    def handler(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
        if os.getpid() == pid:  # not in forked data-loader workers
            sys.stderr.write(f"{command[0]}: interrupted (resume a training run with "
                             "--resume)\n")
            sys.stderr.flush()
        os._exit(130)  # immediately: a KeyboardInterrupt can be swallowed mid-import

    return handler


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pof`` command; returns the exit code."""
    command = ["pof"]
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:  # signal handlers can only be set there
        previous = signal.signal(signal.SIGINT, _on_ctrl_c(command, os.getpid()))
    try:
        from ..errors import PofError
        from .parser import build_parser

        args = build_parser().parse_args(argv)
        command[0] = f"pof {args.command}"
        try:
            args.func(args)
        except PofError as e:
            if os.environ.get("POF_DEBUG"):
                raise
            print(f"{command[0]}: error: {e}", file=sys.stderr)
            return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    return 0
