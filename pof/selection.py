"""Which layers of a model pof acts on: Conv2d and Linear, selected by name pattern."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase

from torch import nn

PRUNABLE = (nn.Conv2d, nn.Linear)


def _as_patterns(patterns: str | Sequence[str] | None) -> list[str]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        return [patterns]
    return list(patterns)


def _matches(name: str, pattern: str) -> bool:
    """A pattern matches a module name exactly, as a glob, or as a dotted prefix."""
    return fnmatchcase(name, pattern) or name.startswith(pattern + ".")


def select_layers(
    model: nn.Module,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    keep_first_conv: bool = True,
) -> list[tuple[str, nn.Module]]:
    """Return ``(name, module)`` for the Conv2d/Linear layers pof should act on.

    By default every Conv2d and Linear except the network's first conv (in registration
    order). ``include``/``exclude`` are glob patterns over module names (``"fc"``,
    ``"layer1.*"``); a pattern also matches everything under a dotted prefix. An
    ``include`` list replaces the default selection (the first conv is then selectable).
    Raises ``ValueError`` if a pattern matches no layer or nothing is selected.
    """
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, PRUNABLE)]
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no prunable layer (pof acts on nn.Conv2d and nn.Linear)"
        )
    inc, exc = _as_patterns(include), _as_patterns(exclude)
    names = [n for n, _ in layers]
    for kind, pats in (("include", inc), ("exclude", exc)):
        for p in pats:
            if not any(_matches(n, p) for n in names):
                raise ValueError(
                    f"{kind} pattern {p!r} matches no Conv2d/Linear layer; "
                    f"layers are: {', '.join(names[:8])}{', ...' if len(names) > 8 else ''}"
                )
    if inc:
        chosen = [(n, m) for n, m in layers if any(_matches(n, p) for p in inc)]
    else:
        first_conv = next((n for n, m in layers if isinstance(m, nn.Conv2d)), None)
        chosen = [(n, m) for n, m in layers if not (keep_first_conv and n == first_conv)]
    chosen = [(n, m) for n, m in chosen if not any(_matches(n, p) for p in exc)]
    if not chosen:
        raise ValueError("no prunable layer left after include/exclude")
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
    parent, attr = named_parents(model)[name]
    setattr(parent, attr, new)


def flat_rows(weight_shape: Iterable[int]) -> tuple[int, int]:
    """(rows, cols) of a weight seen as one row per output unit."""
    shape = list(weight_shape)
    cols = 1
    for s in shape[1:]:
        cols *= s
    return shape[0], cols
