"""Which layers of a model pof acts on: Conv2d and Linear, selected by name pattern.

The selection (include / exclude patterns, first conv kept) is recorded on the model the
first time :func:`pof.to_sphere` or a penalty sees it, so that :func:`pof.prune`, sweeps,
checkpoints and the CLI use the same layers by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from torch import nn

from ..errors import PofError

PRUNABLE = (nn.Conv2d, nn.Linear)
SELECTION_ATTR = "pof_selection"

Patterns = str | Sequence[str] | None


def _as_patterns(patterns: Patterns) -> tuple[str, ...]:
    if patterns is None:
        return ()
    if isinstance(patterns, str):
        return (patterns,)
    return tuple(patterns)


def _matches(name: str, pattern: str) -> bool:
    """A pattern matches a module name exactly, as a glob, or as a dotted prefix."""
    return fnmatchcase(name, pattern) or name.startswith(pattern + ".")


@dataclass(frozen=True)
class Selection:
    """Layer selection: ``include``/``exclude`` glob patterns and whether the first conv
    stays dense (only when nothing is included explicitly)."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    keep_first_conv: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"include": list(self.include), "exclude": list(self.exclude),
                "keep_first_conv": self.keep_first_conv}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Selection:
        return cls(_as_patterns(d.get("include")), _as_patterns(d.get("exclude")),
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
    (or the default: every Conv2d/Linear but the first conv)."""
    if include is None and exclude is None and keep_first_conv is None:
        return recorded_selection(model) or Selection()
    return Selection(_as_patterns(include), _as_patterns(exclude),
                     True if keep_first_conv is None else keep_first_conv)


def select_layers(
    model: nn.Module,
    include: Patterns = None,
    exclude: Patterns = None,
    keep_first_conv: bool | None = None,
) -> list[tuple[str, nn.Module]]:
    """Return ``(name, module)`` for the Conv2d/Linear layers pof should act on.

    By default the selection recorded on the model, else every Conv2d and Linear except
    the network's first conv (in registration order). ``include``/``exclude`` are glob
    patterns over module names (``"fc"``, ``"layer1.*"``); a pattern also matches
    everything under a dotted prefix. An ``include`` list replaces the default selection
    (the first conv is then selectable). Raises :class:`PofError` if a pattern matches no
    layer or nothing is selected.
    """
    sel = resolve_selection(model, include, exclude, keep_first_conv)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, PRUNABLE)]
    if not layers:
        raise PofError(
            f"{type(model).__name__} has no prunable layer (pof acts on nn.Conv2d and nn.Linear)"
        )
    names = [n for n, _ in layers]
    for kind, pats in (("include", sel.include), ("exclude", sel.exclude)):
        for p in pats:
            if not any(_matches(n, p) for n in names):
                raise PofError(
                    f"{kind} pattern {p!r} matches no Conv2d/Linear layer; "
                    f"layers are: {', '.join(names[:8])}{', ...' if len(names) > 8 else ''}"
                )
    if sel.include:
        chosen = [(n, m) for n, m in layers if any(_matches(n, p) for p in sel.include)]
    else:
        first_conv = next((n for n, m in layers if isinstance(m, nn.Conv2d)), None)
        chosen = [(n, m) for n, m in layers if not (sel.keep_first_conv and n == first_conv)]
    chosen = [(n, m) for n, m in chosen if not any(_matches(n, p) for p in sel.exclude)]
    if not chosen:
        raise PofError("no prunable layer left after include/exclude")
    return chosen


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
