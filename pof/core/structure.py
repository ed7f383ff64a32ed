"""A model's pof state as plain data: which layers are on the sphere, pruned, folded or
cosine, and the recorded layer selection — saved in checkpoint metadata and rebuilt on a
fresh model before its ``state_dict`` is loaded."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import CheckpointError
from .fold import FoldedConv2d, FoldedLinear, fold
from .prune import RECOVER, PruneMask
from .selection import Selection, record_selection, recorded_selection, replace_module
from .sphere import UnitSphere, as_cosine, is_cosine


def structure(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Per-layer pof state needed to rebuild ``model`` before loading its ``state_dict``."""
    out: dict[str, dict[str, Any]] = {}
    for name, m in model.named_modules():
        entry: dict[str, Any] = {}
        if isinstance(m, FoldedConv2d | FoldedLinear):
            entry["folded"] = True
        if is_cosine(m):
            entry["cosine"] = True
        if parametrize.is_parametrized(m, "weight"):
            chain = []
            for p in m.parametrizations.weight:
                if isinstance(p, PruneMask):
                    chain.append({"mask": p.recover, "mean_scope": p.mean_scope})
                elif isinstance(p, UnitSphere):
                    chain.append({"sphere": True, "scale": p.scale is not None})
                else:
                    raise CheckpointError(
                        f"layer {name!r} has a parametrization pof cannot save: {type(p).__name__}"
                    )
            entry["weight"] = chain
        if entry:
            out[name] = entry
    return out


def _bad(where: str, what: str) -> CheckpointError:
    return CheckpointError(f"{where}: checkpoint structure: {what}")


def apply_structure(model: nn.Module, struct: dict[str, dict[str, Any]],
                    where: str = "checkpoint") -> nn.Module:
    """Rebuild the pof structure described by :func:`structure` on a fresh model.

    Raises :class:`CheckpointError` (naming ``where``) for a description that does not
    fit the model or has values of the wrong type.
    """
    if not isinstance(struct, dict):
        raise _bad(where, f"expected a mapping of layer names, got {type(struct).__name__}")
    for name, entry in struct.items():
        m = dict(model.named_modules()).get(name)
        if m is None:
            raise CheckpointError(f"checkpoint names layer {name!r}, which the model lacks")
        if not isinstance(entry, dict) or not isinstance(entry.get("weight", []), list):
            raise _bad(where, f"layer {name!r}: malformed entry {entry!r:.80}")
        if not isinstance(m, nn.Conv2d | nn.Linear) and entry:
            raise _bad(where, f"layer {name!r} is a {type(m).__name__}, not Conv2d/Linear")
        if entry.get("cosine"):
            m = as_cosine(m)
            replace_module(model, name, m)
        if entry.get("folded"):  # folded first: a folded layer may have been pruned again
            tmp = PruneMask(torch.ones_like(m.weight, dtype=torch.bool), "mean")
            parametrize.register_parametrization(m, "weight", tmp)
            m = fold(m)
            replace_module(model, name, m)
        for p in entry.get("weight", []):
            if not isinstance(p, dict):
                raise _bad(where, f"layer {name!r}: malformed parametrization {p!r:.80}")
            if p.get("sphere"):
                scale = torch.ones(m.weight.shape[0]) if p.get("scale") else None
                parametrize.register_parametrization(m, "weight", UnitSphere(scale))
            elif p.get("mask") in RECOVER and p.get("mean_scope", "unit") in ("unit", "layer"):
                mask = torch.ones_like(m.weight, dtype=torch.bool)
                parametrize.register_parametrization(
                    m, "weight", PruneMask(mask, p["mask"], p.get("mean_scope", "unit")))
            else:
                raise _bad(where, f"layer {name!r}: unknown parametrization {p!r:.80}")
    return model


def selection_meta(model: nn.Module) -> dict[str, Any] | None:
    """The recorded layer selection as plain data (None if none is recorded)."""
    sel = recorded_selection(model)
    return None if sel is None else sel.to_dict()


def apply_selection(model: nn.Module, meta: Any, where: str = "checkpoint") -> None:
    """Record the selection saved by :func:`selection_meta` on ``model``."""
    if meta is None:
        return
    ok = isinstance(meta, dict) and all(
        isinstance(meta.get(k, []), list) and all(isinstance(p, str) for p in meta.get(k, []))
        for k in ("include", "exclude")) and isinstance(meta.get("keep_first_conv", True), bool)
    if not ok:
        raise _bad(where, f"malformed layer selection {meta!r:.80}")
    record_selection(model, Selection.from_dict(meta))
