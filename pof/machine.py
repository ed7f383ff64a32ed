"""This machine in a few words, for records of timings and runs."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> str:
    """The CPU model and its core count (e.g. ``"AMD EPYC 7B13, 2 cores"``)."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores"
