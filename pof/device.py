"""Where models run: ``--device auto|cpu|cuda|cuda:N`` (auto = CUDA when available)."""

from __future__ import annotations

import torch


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None -> ``cuda`` if available else ``cpu``; else the named device.

    Raises ``ValueError`` (one line) for a malformed name or a CUDA device that this
    machine does not have.
    """
    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but CUDA is not available here; "
                             "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} does not exist ({torch.cuda.device_count()} "
                             "CUDA device(s))")
    return dev


def model_device(model: torch.nn.Module) -> torch.device:
    """Device of ``model``'s first parameter or buffer (CPU for an empty model)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")
