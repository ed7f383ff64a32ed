"""Which weights of a model pof acts on: targets (see :mod:`pof.core.targets`) selected by
name pattern, and the reason for every weight left dense.

The selection (include / exclude patterns, first conv kept) is recorded on the model the
first time :func:`pof.to_sphere` or a penalty sees it, so that :func:`pof.prune`, sweeps,
checkpoints, reports and the CLI use the same weights by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from torch import nn

from ..errors import PofError
from .targets import CONVS, Target, raw_param, weight_key, weight_target

SELECTION_ATTR = "pof_selection"

Patterns = str | Sequence[str] | None


def as_patterns(patterns: Patterns) -> tuple[str, ...]:
    """``None``, one pattern or several, as a tuple of patterns."""
    if patterns is None:
        return ()
    if isinstance(patterns, str):
        return (patterns,)
    return tuple(patterns)


def name_matches(name: str, pattern: str) -> bool:
    """A pattern matches a module name exactly, as a glob, or as a dotted prefix."""
    return fnmatchcase(name, pattern) or name.startswith(pattern + ".")


@dataclass(frozen=True)
class Selection:
    """Weight selection: ``include``/``exclude`` glob patterns over module or parameter
    names and whether the first conv stays dense (only when nothing is included
    explicitly)."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    keep_first_conv: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"include": list(self.include), "exclude": list(self.exclude),
                "keep_first_conv": self.keep_first_conv}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Selection:
        return cls(as_patterns(d.get("include")), as_patterns(d.get("exclude")),
                   bool(d.get("keep_first_conv", True)))


def recorded_selection(model: nn.Module) -> Selection | None:
    """The selection recorded on ``model`` (see :func:`record_selection`), or None."""
    sel = getattr(model, SELECTION_ATTR, None)
    return sel if isinstance(sel, Selection) else None


def record_selection(model: nn.Module, selection: Selection) -> Selection:
    """Record ``selection`` on ``model`` unless one is recorded already; return the one kept."""
    old = recorded_selection(model)
    if old is not None:
        return old
    object.__setattr__(model, SELECTION_ATTR, selection)
    return selection


def resolve_selection(
    model: nn.Module,
    include: Patterns = None,
    exclude: Patterns = None,
    keep_first_conv: bool | None = None,
) -> Selection:
    """The selection the arguments ask for; with none given, the one recorded on ``model``
    (or the default: every supported weight but the first conv and embeddings)."""
    if include is None and exclude is None and keep_first_conv is None:
        return recorded_selection(model) or Selection()
    return Selection(as_patterns(include), as_patterns(exclude),
                     True if keep_first_conv is None else keep_first_conv)


@dataclass(frozen=True, eq=False)
class WeightInfo:
    """One layer weight of a model: its target (if pof can prune it) and, if left dense,
    why (``reason`` None: in the selection)."""

    key: str
    name: str
    attr: str
    target: Target | None
    reason: str | None


def _layer_weights(model: nn.Module) -> list[tuple[Target | None, str, str, str | None]]:
    """``(target, module name, attribute, reason)`` for every weight of 2+ dimensions."""
    rows: list[tuple[Target | None, str, str, str | None]] = []
    for name, m in model.named_modules():
        if "parametrizations" in name.split("."):
            continue  # a parametrization's own tensors (a sphere's per-unit scale, ...)
        target, reason = weight_target(name, m)
        if target is not None:
            rows.append((target, name, target.attr, reason))
        params = list(m.named_parameters(recurse=False))
        params += [(a, getattr(m.parametrizations, a).original)
                   for a in getattr(m, "parametrizations", {})]
        for pname, p in params:
            if (target is not None and pname == target.attr) or p is None or p.dim() < 2:
                continue
            rows.append((None, name, pname,
                         reason or f"not a layer weight ({type(m).__name__}.{pname})"))
    seen: dict[int, str] = {}  # tied weights: GPT-2's lm_head shares wte's parameter
    for i, (_, name, attr, _reason) in enumerate(rows):
        p = raw_param(model.get_submodule(name), attr)
        if p is not None and id(p) in seen:
            rows[i] = (None, name, attr, f"tied to {seen[id(p)]} (shared parameter)")
        elif p is not None:
            seen[id(p)] = weight_key(name, attr)
    return rows


def _matches_target(t: Target, pattern: str) -> bool:
    return name_matches(t.name, pattern) or name_matches(t.key, pattern)


def weight_inventory(
    model: nn.Module,
    include: Patterns = None,
    exclude: Patterns = None,
    keep_first_conv: bool | None = None,
) -> list[WeightInfo]:
    """Every layer weight of ``model`` (2-D or more): selected, or with the reason pof
    leaves it dense. The selection is resolved as in :func:`select_weights`; raises
    :class:`PofError` if an include/exclude pattern matches no prunable weight."""
    sel = resolve_selection(model, include, exclude, keep_first_conv)
    rows = _layer_weights(model)
    prunable = [t for t, _, _, _ in rows if t is not None]
    for kind, pats in (("include", sel.include), ("exclude", sel.exclude)):
        for p in pats:
            if not any(_matches_target(t, p) for t in prunable):
                keys = [t.key for t in prunable]
                raise PofError(
                    f"{kind} pattern {p!r} matches no prunable weight; "
                    f"they are: {', '.join(keys[:8])}{', ...' if len(keys) > 8 else ''}"
                )
    first_conv = next((t.name for t in prunable if isinstance(t.module, CONVS)), None)
    out = []
    for t, name, attr, reason in rows:
        if t is not None:
            if sel.include:
                reason = None if any(_matches_target(t, p) for p in sel.include) else (
                    "not matched by include")
            elif reason is None and sel.keep_first_conv and t.name == first_conv:
                reason = "first conv kept dense"
            if reason is None and any(_matches_target(t, p) for p in sel.exclude):
                reason = "excluded by pattern"
        out.append(WeightInfo(weight_key(name, attr), name, attr, t, reason))
    return out


def select_weights(
    model: nn.Module,
    include: Patterns = None,
    exclude: Patterns = None,
    keep_first_conv: bool | None = None,
) -> list[Target]:
    """The weights pof acts on, as :class:`~pof.core.targets.Target` s.

    By default the selection recorded on the model, else every supported weight except
    the network's first (non-transposed) conv, embeddings and tied weights.
    ``include``/``exclude`` are glob patterns over module or parameter names (``"fc"``,
    ``"layer1.*"``, ``"*.in_proj_weight"``); a pattern also matches everything under a
    dotted prefix. An ``include`` list replaces the default selection (the first conv and
    embeddings are then selectable). Raises :class:`PofError` if a pattern matches no
    weight or nothing is selected.
    """
    inv = weight_inventory(model, include, exclude, keep_first_conv)
    if not any(w.target is not None for w in inv):
        raise PofError(
            f"{type(model).__name__} has no prunable layer (pof acts on Linear, Conv1d/2d/3d, "
            "ConvTranspose, MultiheadAttention and Hugging Face Conv1D weights)"
        )
    chosen = [w.target for w in inv if w.target is not None and w.reason is None]
    if not chosen:
        raise PofError("no prunable layer left after include/exclude")
    return chosen


def select_layers(
    model: nn.Module,
    include: Patterns = None,
    exclude: Patterns = None,
    keep_first_conv: bool | None = None,
) -> list[tuple[str, nn.Module]]:
    """``(module name, module)`` of the selected weights (see :func:`select_weights`)."""
    return [(t.name, t.module) for t in select_weights(model, include, exclude, keep_first_conv)]


def named_parents(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """Map a module's dotted name to ``(parent, attribute)`` so it can be replaced."""
    out: dict[str, tuple[nn.Module, str]] = {}
    for pname, parent in model.named_modules():
        for child, _ in parent.named_children():
            out[f"{pname}.{child}" if pname else child] = (parent, child)
    return out


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Swap the submodule called ``name`` for ``new``."""
    if not name:
        raise PofError(f"cannot replace the model itself ({type(model).__name__}); "
                       "wrap the layer in a container (e.g. nn.Sequential)")
    parent, attr = named_parents(model)[name]
    setattr(parent, attr, new)


def empty_like_layer(module: nn.Module, cls: type[nn.Module]) -> nn.Module:
    """A new ``cls`` layer with ``module``'s Conv2d/Linear hyper-parameters, device, dtype
    and train/eval mode (weights uninitialised)."""
    w = module.weight
    if isinstance(module, nn.Conv2d):
        new = cls(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                  module.padding, module.dilation, module.groups, module.bias is not None,
                  module.padding_mode, device=w.device, dtype=w.dtype)
    else:
        new = cls(module.in_features, module.out_features, module.bias is not None,
                  device=w.device, dtype=w.dtype)
    new.train(module.training)
    return new
