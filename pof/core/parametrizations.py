"""pof's parametrizations on a module: the :class:`PruneMask`, and adding, finding and
removing parametrizations on a class of the module's own (see :func:`own_class`).

Everything that puts a parametrization on a weight (:mod:`pof.core.sphere`,
:mod:`pof.core.prune`, :mod:`pof.core.channel_masks`, :mod:`pof.core.structure`) builds on
this module; it imports nothing of theirs.
"""

from __future__ import annotations

import copy

from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..errors import PofError
from .masks import check_choice
from .targets import to_units, unit_view

RECOVER = ("zero", "mean")
MEAN_SCOPES = ("unit", "layer")


class PruneMask(nn.Module):
    """Parametrization: keep masked weights; fill pruned ones with 0 or their mean.

    ``recover="mean"`` replaces pruned entries by the mean of the pruned values, per
    output unit (``mean_scope="unit"``) or over the layer (``"layer"``: over each of the
    ``groups`` unit blocks, e.g. q/k/v). ``unit_dim`` is the weight's output-unit axis.
    """

    def __init__(self, mask: Tensor, recover: str = "zero", mean_scope: str = "unit",
                 unit_dim: int = 0, groups: int = 1) -> None:
        super().__init__()
        check_choice("recover", recover, RECOVER)
        check_choice("mean_scope", mean_scope, MEAN_SCOPES)
        self.register_buffer("mask", mask.bool())
        self.recover = recover
        self.mean_scope = mean_scope
        self.unit_dim = unit_dim
        self.groups = groups

    def fill(self, w: Tensor) -> Tensor:
        """Value given to the pruned entries of ``w``, per output unit (shape ``(units,)``)."""
        u = to_units(w, self.unit_dim)
        if self.recover == "zero":
            return u.new_zeros(u.shape[0])
        pruned = to_units(~self.mask, self.unit_dim).to(w.dtype)
        total, count = (u * pruned).flatten(1).sum(1), pruned.flatten(1).sum(1)
        if self.mean_scope == "layer":
            g = self.groups
            total = total.view(g, -1).sum(1, keepdim=True).expand(g, len(total) // g)
            count = count.view(g, -1).sum(1, keepdim=True).expand(g, len(count) // g)
            total, count = total.reshape(-1), count.reshape(-1)
        return total / count.clamp_min(1)

    def forward(self, w: Tensor) -> Tensor:
        keep = self.mask.to(w.dtype)
        out = w * keep
        if self.recover == "mean":
            out = out + (1 - keep) * unit_view(self.fill(w), w, self.unit_dim)
        return out


def mask_param(module: nn.Module, attr: str | None = None) -> PruneMask | None:
    """The :class:`PruneMask` on ``module``'s weight ``attr`` (default: any weight), or None."""
    if not parametrize.is_parametrized(module):
        return None
    attrs = [attr] if attr is not None else list(module.parametrizations.keys())
    for a in attrs:
        if a in module.parametrizations:
            for p in module.parametrizations[a]:
                if isinstance(p, PruneMask):
                    return p
    return None


def pruned_attrs(module: nn.Module) -> list[str]:
    """Names of ``module``'s own weights that carry a prune mask."""
    if not parametrize.is_parametrized(module):
        return []
    return [a for a in module.parametrizations.keys() if mask_param(module, a) is not None]


def is_pruned(module: nn.Module) -> bool:
    """True if ``module`` carries a pof prune mask."""
    return mask_param(module) is not None


def pruned_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every layer with a prune mask."""
    return [(n, m) for n, m in model.named_modules() if is_pruned(m)]


def refuse_pruned(model: nn.Module, advice: str) -> None:
    """A :class:`PofError` naming the first masked layer when ``model`` is already pruned;
    ``advice`` says what to do about it."""
    already = pruned_layers(model)
    if already:
        raise PofError(f"model is already pruned ({already[0][0]!r}, ...): {advice}")


def own_class(m: nn.Module) -> nn.Module:
    """Give a parametrized ``m`` a class of its own, in place; returns ``m``.

    ``torch.nn.utils.parametrize`` keeps a weight's property on the module's class, and a
    ``copy.deepcopy`` shares that class: removing (or adding) a parametrization on one
    copy would delete (or add) the property on the other. Every pof call that changes a
    parametrized module's class calls this first, so nothing it does reaches a copy.
    """
    if parametrize.is_parametrized(m):
        cls = type(m)
        m.__class__ = type(cls.__name__, cls.__bases__, {
            k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")})
    return m


def register(m: nn.Module, attr: str, p: nn.Module, unsafe: bool = False) -> None:
    """``parametrize.register_parametrization``; a new property goes on ``m``'s own class
    (see :func:`own_class`); appending to ``attr``'s parametrizations keeps the class."""
    if not parametrize.is_parametrized(m, attr):
        own_class(m)
    parametrize.register_parametrization(m, attr, p, unsafe=unsafe)


def remove_parametrization(m: nn.Module, attr: str, leave_parametrized: bool) -> None:
    """Remove ``attr``'s parametrizations (on ``m``'s own class, see :func:`own_class`),
    keeping it first among the parameters (as layers register it: ``weight`` before
    ``bias``)."""
    parametrize.remove_parametrizations(own_class(m), attr,
                                        leave_parametrized=leave_parametrized)
    for k in [attr, *[k for k in m._parameters if k != attr]]:
        m._parameters[k] = m._parameters.pop(k)


def plain_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parametrized weights are baked into plain ones.

    A ``copy.deepcopy`` of a parametrized module keeps the original's weight properties,
    and under ``parametrize.cached()`` (every pof training step) those look the weight up
    by the *original* module's id: the copy would compute with the original's current
    weights. A frozen teacher must be this copy instead.
    """
    new = copy.deepcopy(model)
    for m in new.modules():
        if parametrize.is_parametrized(m):
            for attr in list(m.parametrizations):
                remove_parametrization(m, attr, leave_parametrized=True)
    return new
