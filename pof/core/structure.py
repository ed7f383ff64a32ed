"""A model's pof state as plain data: which weights are on the sphere or pruned, which
layers are folded or cosine, and the recorded selection — saved in checkpoint metadata and
rebuilt on a fresh model before its ``state_dict`` is loaded."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import CheckpointError
from .fold import fold
from .folded import as_folded_attention, is_folded
from .parametrizations import MEAN_SCOPES, RECOVER, PruneMask, register
from .selection import Selection, record_selection, recorded_selection, replace_module
from .sphere import COSINE_KINDS, UnitSphere, as_cosine, is_cosine
from .targets import Target, weight_target

_FLAGS = ("folded", "cosine")


def structure(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Per-layer pof state needed to rebuild ``model`` before loading its ``state_dict``."""
    out: dict[str, dict[str, Any]] = {}
    for name, m in model.named_modules():
        entry: dict[str, Any] = {}
        if is_folded(m):
            entry["folded"] = True
        if is_cosine(m):
            entry["cosine"] = True
        for attr in (m.parametrizations.keys() if parametrize.is_parametrized(m) else []):
            chain = []
            for p in m.parametrizations[attr]:
                if isinstance(p, PruneMask):
                    chain.append({"mask": p.recover, "mean_scope": p.mean_scope})
                elif isinstance(p, UnitSphere):
                    chain.append({"sphere": True, "scale": p.scale is not None})
                else:
                    raise CheckpointError(
                        f"layer {name!r} has a parametrization pof cannot save: {type(p).__name__}"
                    )
            entry[attr] = chain  # "weight", or "in_proj_weight" for attention
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
            raise CheckpointError(f"{where}: checkpoint names layer {name!r}, which the model "
                                  "lacks")
        if not isinstance(entry, dict) or not all(
                isinstance(v, list) for k, v in entry.items() if k not in _FLAGS):
            raise _bad(where, f"layer {name!r}: malformed entry {entry!r:.80}")
        target, _ = weight_target(name, m)
        if target is None and entry:
            raise _bad(where, f"layer {name!r} is a {type(m).__name__}, which pof does not "
                       "prune")
        if entry.get("cosine"):
            if not isinstance(m, COSINE_KINDS):
                raise _bad(where, f"layer {name!r} is a {type(m).__name__}, not Conv2d/Linear")
            m = as_cosine(m)
            replace_module(model, name, m)
        if entry.get("folded"):  # folded first: a folded layer may have been pruned again
            m = _folded_like(m, target)
            replace_module(model, name, m)
        for attr, chain in entry.items():
            if attr in _FLAGS:
                continue
            if attr != target.attr:
                raise _bad(where, f"layer {name!r} has no prunable weight {attr!r}")
            for p in chain:
                register(m, attr, _parametrization(
                    p, getattr(m, attr), target, where, name))
    return model


def _folded_like(m: nn.Module, target: Target) -> nn.Module:
    """``m`` as an (all-zero-mean) folded layer, ready for its ``state_dict``."""
    if isinstance(m, nn.MultiheadAttention):
        return as_folded_attention(m)
    tmp = PruneMask(torch.ones_like(m.weight, dtype=torch.bool), "mean", "unit",
                    target.unit_dim)
    register(m, "weight", tmp)
    return fold(m)


def _parametrization(p: Any, w: torch.Tensor, target: Target, where: str,
                     name: str) -> nn.Module:
    """The parametrization a :func:`structure` chain entry describes, for weight ``w``."""
    if not isinstance(p, dict):
        raise _bad(where, f"layer {name!r}: malformed parametrization {p!r:.80}")
    ud = target.unit_dim
    if p.get("sphere"):
        return UnitSphere(torch.ones(w.shape[ud]) if p.get("scale") else None, unit_dim=ud)
    if p.get("mask") in RECOVER and p.get("mean_scope", "unit") in MEAN_SCOPES:
        return PruneMask(torch.ones_like(w, dtype=torch.bool), p["mask"],
                         p.get("mean_scope", "unit"), ud, target.groups)
    raise _bad(where, f"layer {name!r}: unknown parametrization {p!r:.80}")


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
