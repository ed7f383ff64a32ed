"""Optional packages: import one on first use, or say in one line how to install it."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import PofError


def require(module: str, purpose: str, extra: str = "speed") -> ModuleType:
    """Import ``module``, or raise a one-line :class:`PofError`: ``purpose`` needs it and
    ``pip install 'pof[extra]'`` installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise PofError(f"{purpose} needs the {module} package: pip install 'pof[{extra}]'"
                       ) from None
