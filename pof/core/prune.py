"""One-shot magnitude pruning with zero or mean recovery, reversible until ``remove``.

``prune`` adds a :class:`PruneMask` parametrization to each selected layer (after the
sphere parametrization, if any), the way ``torch.nn.utils.prune`` keeps masks on the
module. ``unprune`` takes the masks off again; :func:`pof.remove` (in :mod:`pof.core.fold`)
makes them permanent.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..errors import PofError
from .masks import check_choice, check_pattern, check_sparsity, compute_masks
from .selection import Patterns, select_layers

RECOVER = ("zero", "mean")
MEAN_SCOPES = ("unit", "layer")


class PruneMask(nn.Module):
    """Parametrization: keep masked weights; fill pruned ones with 0 or their mean.

    ``recover="mean"`` replaces pruned entries by the mean of the pruned values, per
    output unit (``mean_scope="unit"``) or over the layer (``"layer"``).
    """

    def __init__(self, mask: Tensor, recover: str = "zero", mean_scope: str = "unit") -> None:
        super().__init__()
        check_choice("recover", recover, RECOVER)
        check_choice("mean_scope", mean_scope, MEAN_SCOPES)
        self.register_buffer("mask", mask.bool())
        self.recover = recover
        self.mean_scope = mean_scope

    def fill(self, w: Tensor) -> Tensor:
        """Value given to the pruned entries of ``w``, per output unit (shape ``(out,)``)."""
        pruned = (~self.mask).to(w.dtype)
        if self.recover == "zero":
            return w.new_zeros(w.shape[0])
        total, count = (w * pruned).flatten(1).sum(1), pruned.flatten(1).sum(1)
        if self.mean_scope == "layer":
            total, count = total.sum().expand_as(total), count.sum().expand_as(count)
        return total / count.clamp_min(1)

    def forward(self, w: Tensor) -> Tensor:
        keep = self.mask.to(w.dtype)
        out = w * keep
        if self.recover == "mean":
            out = out + (1 - keep) * self.fill(w).view(-1, *([1] * (w.dim() - 1)))
        return out


def mask_param(module: nn.Module) -> PruneMask | None:
    """The :class:`PruneMask` on ``module.weight``, or None."""
    if not parametrize.is_parametrized(module, "weight"):
        return None
    return next((p for p in module.parametrizations.weight if isinstance(p, PruneMask)), None)


def is_pruned(module: nn.Module) -> bool:
    """True if ``module`` carries a pof prune mask."""
    return mask_param(module) is not None


def pruned_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every layer with a prune mask."""
    return [(n, m) for n, m in model.named_modules() if is_pruned(m)]


def _effective_weights(layers: list[tuple[str, nn.Module]]) -> list[Tensor]:
    with torch.no_grad():
        return [m.weight.detach() for _, m in layers]


def prune(
    model: nn.Module,
    sparsity: float | None,
    scope: str = "layer",
    pattern: str | None = None,
    recover: str = "zero",
    mean_scope: str = "unit",
    include: Patterns = None,
    exclude: Patterns = None,
    keep_first_conv: bool | None = None,
) -> nn.Module:
    """Magnitude-prune ``model`` in place at ``sparsity`` (a fraction in [0, 1)).

    ``scope="layer"`` prunes every selected layer to ``sparsity``; ``"global"`` uses one
    threshold across them. ``pattern="N:M"`` keeps N of every M consecutive input-channel
    weights instead (``sparsity`` may then be None or must equal ``1 - N/M``).
    ``recover="mean"`` fills pruned entries with their mean (see :class:`PruneMask`).
    Layers: the selection recorded on the model by ``to_sphere`` or a penalty, unless
    ``include``/``exclude``/``keep_first_conv`` are given. Works on plain and sphere
    models; masks stay on the modules until :func:`pof.remove` (permanent) or
    :func:`unprune` (undo). Returns ``model``.
    """
    sparsity = check_sparsity(check_pattern(sparsity, pattern))
    check_choice("recover", recover, RECOVER)  # before the masks are computed
    check_choice("mean_scope", mean_scope, MEAN_SCOPES)
    layers = select_layers(model, include, exclude, keep_first_conv)
    already = [n for n, _ in pruned_layers(model)]
    if already:
        raise PofError(
            f"model is already pruned ({already[0]!r}, ...): call pof.remove(model) to make "
            "that permanent, or pof.unprune(model) to undo it, before pruning again"
        )
    names = [n for n, _ in layers]
    masks = compute_masks(_effective_weights(layers), sparsity, scope, pattern, names)
    for (_, m), mask in zip(layers, masks, strict=True):
        parametrize.register_parametrization(m, "weight", PruneMask(mask, recover, mean_scope),
                                             unsafe=True)  # shapes match by construction
    return model


def unprune(model: nn.Module) -> nn.Module:
    """Take the prune masks off again, restoring the weights as they were before (channel
    masks and their mean constants too)."""
    from .channel_masks import clear_channels  # it builds on this module

    clear_channels(model)
    for _, m in pruned_layers(model):
        plist = m.parametrizations.weight
        if len(plist) == 1:
            order = [k for k in m._parameters if k != "parametrizations"]
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
            for k in ["weight", *order]:  # keep `weight` where it was (before `bias`)
                if k in m._parameters:
                    m._parameters[k] = m._parameters.pop(k)
        else:
            idx = next(i for i, p in enumerate(plist) if isinstance(p, PruneMask))
            del plist[idx]
    return model
