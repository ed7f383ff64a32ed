"""``pof.save`` / ``pof.load``: a model with everything pof put on it (sphere, prune masks,
folded means, layer selection, channel-pruned widths) in one safetensors file, and back.

Needs the ``train`` extra (safetensors) on first use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn


def save(model: nn.Module, path: str | os.PathLike, meta: dict[str, Any] | None = None,
         compact: bool = False) -> Path:
    """Write ``model`` to ``path`` (safetensors + JSON metadata, atomically); ``meta`` is
    kept in the metadata. A :func:`pof.create_model` model records its architecture, so
    ``pof.load(path)`` rebuilds it; any other model loads into a fresh instance with
    ``pof.load(path, model=...)``. ``compact=True`` stores a model made permanent with
    :func:`pof.remove` as its non-zero values plus a bit mask."""
    from .training.checkpoint import save_checkpoint

    info = dict(meta or {})
    if "arch" not in info and isinstance(getattr(model, "pof_arch", None), dict):
        info["arch"] = model.pof_arch
    return save_checkpoint(path, model, info, compact=compact)


def load(path: str | os.PathLike, model: nn.Module | None = None
         ) -> tuple[nn.Module, dict[str, Any]]:
    """``(model, metadata)`` of a pof checkpoint (``pof train``, ``pof prune``,
    ``pof export`` or :func:`pof.save`), on the CPU.

    Without ``model`` the architecture the file records is rebuilt from the registry; with
    it (a fresh instance of the saved model's class, e.g. a Hugging Face model from its
    config) pof's structure is applied to it and the weights are loaded strictly. Any
    problem with the file is a one-line :class:`pof.PofError`.
    """
    from .core.structure import apply_selection, apply_structure
    from .core.widths import apply_widths
    from .training.checkpoint import (
        load_checkpoint,
        load_model_state,
        model_from_checkpoint,
        split,
    )

    if model is None:
        return model_from_checkpoint(path)
    tensors, meta = load_checkpoint(path)
    apply_widths(model, meta.get("widths"), str(path))
    apply_structure(model, meta.get("structure", {}), str(path))
    apply_selection(model, meta.get("selection"), str(path))
    load_model_state(model, split(tensors, "model"), str(path))
    return model, meta
