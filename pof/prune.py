"""One-shot magnitude pruning with zero or mean recovery, reversible until ``remove``.

``prune`` adds a :class:`PruneMask` parametrization to each selected layer (after the
sphere parametrization, if any), the way ``torch.nn.utils.prune`` keeps masks on the
module. ``unprune`` takes the masks off again; ``remove`` makes them permanent. A layer
with mean recovery becomes a :class:`FoldedConv2d` / :class:`FoldedLinear`: a weight
with the same zeros as the mask plus ``mean * windowed_sum(input)``, so it stays sparse.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .masks import check_sparsity, compute_masks, parse_nm
from .selection import replace_module, select_layers

RECOVER = ("zero", "mean")
MEAN_SCOPES = ("unit", "layer")


class PruneMask(nn.Module):
    """Parametrization: keep masked weights; fill pruned ones with 0 or their mean.

    ``recover="mean"`` replaces pruned entries by the mean of the pruned values, per
    output unit (``mean_scope="unit"``) or over the layer (``"layer"``).
    """

    def __init__(self, mask: Tensor, recover: str = "zero", mean_scope: str = "unit") -> None:
        super().__init__()
        if recover not in RECOVER:
            raise ValueError(f"recover must be one of {RECOVER}, got {recover!r}")
        if mean_scope not in MEAN_SCOPES:
            raise ValueError(f"mean_scope must be one of {MEAN_SCOPES}, got {mean_scope!r}")
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


def _mask_param(module: nn.Module) -> PruneMask | None:
    if not parametrize.is_parametrized(module, "weight"):
        return None
    return next((p for p in module.parametrizations.weight if isinstance(p, PruneMask)), None)


def is_pruned(module: nn.Module) -> bool:
    """True if ``module`` carries a pof prune mask."""
    return _mask_param(module) is not None


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
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    keep_first_conv: bool = True,
    structure: str = "weight",
    **channel: Any,
) -> nn.Module:
    """Magnitude-prune ``model`` in place at ``sparsity`` (a fraction in [0, 1)).

    ``scope="layer"`` prunes every selected layer to ``sparsity``; ``"global"`` uses one
    threshold across them. ``pattern="N:M"`` keeps N of every M consecutive input-channel
    weights instead (``sparsity`` may then be None or must equal ``1 - N/M``).
    ``recover="mean"`` fills pruned entries with their mean (see :class:`PruneMask`).
    Works on plain and sphere models; masks stay on the modules until :func:`remove`
    (permanent) or :func:`unprune` (undo). Returns ``model``.

    ``structure="channel"`` prunes whole channels instead (``sparsity`` is then the fraction
    of each channel group to remove; ``channel`` takes ``example_inputs``, ``batches``,
    ``num_batches``, ``importance``): see :func:`pof.structured.prune_channels`.
    """
    if structure == "channel":
        from .structured import prune_channels

        if pattern is not None or scope != "layer" or include is not None:
            raise ValueError("structure='channel' takes no pattern, scope or include")
        return prune_channels(model, sparsity, recover=recover, exclude=exclude, **channel)
    if structure != "weight":
        raise ValueError(f"structure must be 'weight' or 'channel', got {structure!r}")
    if channel:
        raise TypeError(f"prune() got unexpected arguments {sorted(channel)}")
    if pattern is not None:
        n, m = parse_nm(pattern)
        if sparsity is not None and abs(float(sparsity) - (1 - n / m)) > 1e-9:
            raise ValueError(
                f"sparsity {sparsity} disagrees with pattern {pattern} (= {1 - n / m:g}); "
                "pass sparsity=None"
            )
    else:
        if sparsity is None:
            raise ValueError("sparsity is required unless pattern='N:M' is given")
        sparsity = check_sparsity(sparsity)
    if recover not in RECOVER:
        raise ValueError(f"recover must be one of {RECOVER}, got {recover!r}")
    if mean_scope not in MEAN_SCOPES:
        raise ValueError(f"mean_scope must be one of {MEAN_SCOPES}, got {mean_scope!r}")
    layers = select_layers(model, include, exclude, keep_first_conv)
    already = [n for n, _ in pruned_layers(model)]
    if already:
        raise ValueError(
            f"model is already pruned ({already[0]!r}, ...): call pof.remove(model) to make "
            "that permanent, or pof.unprune(model) to undo it, before pruning again"
        )
    names = [n for n, _ in layers]
    masks = compute_masks(_effective_weights(layers), sparsity or 0.0, scope, pattern, names)
    for (_, m), mask in zip(layers, masks, strict=True):
        parametrize.register_parametrization(m, "weight", PruneMask(mask, recover, mean_scope),
                                             unsafe=True)  # shapes match by construction
    return model


def unprune(model: nn.Module) -> nn.Module:
    """Take the prune masks off again, restoring the weights as they were before."""
    from .structured import clear_channel_plan

    clear_channel_plan(model)
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


class FoldedConv2d(nn.Conv2d):
    """Conv2d with a sparse ``weight`` plus ``recovery_mean[o] * windowed_sum(x)``.

    The extra term is folded into the kernel at run time, ``conv(x, weight + mean)``: one
    add over the weight instead of a second pass over the activations, so the layer costs
    what the zero-pruned one does (the stored ``weight`` keeps the mask's zeros).
    """

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight + self.recovery_mean.view(-1, 1, 1, 1)
        return self._conv_forward(x, w, self.bias)


class FoldedLinear(nn.Linear):
    """Linear with a sparse ``weight`` plus ``recovery_mean[o] * sum(x)``, folded at run time."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight + self.recovery_mean.view(-1, 1), self.bias)


def fold(module: nn.Module) -> nn.Module:
    """Return a plain, permanently sparse copy of a pruned layer (folded if mean-recovered).

    The result has ``weight`` zero wherever the mask is, and for mean recovery a
    ``recovery_mean`` buffer so that its outputs equal the masked layer's.
    """
    p = _mask_param(module)
    if p is None:
        raise ValueError("fold() needs a pruned layer (see pof.prune)")
    with torch.no_grad():
        w = module.weight.detach().clone()
        mu = p.fill(w) if p.recover == "mean" else None
        if mu is not None:
            w = (w - mu.view(-1, *([1] * (w.dim() - 1)))) * p.mask
        else:
            w = w * p.mask
    if isinstance(module, nn.Conv2d):
        cls = FoldedConv2d if mu is not None else nn.Conv2d
        new = cls(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                  module.padding, module.dilation, module.groups, module.bias is not None,
                  module.padding_mode, device=w.device, dtype=w.dtype)
    else:
        cls = FoldedLinear if mu is not None else nn.Linear
        new = cls(module.in_features, module.out_features, module.bias is not None,
                  device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if module.bias is not None:
            new.bias.copy_(module.bias.detach())
    if mu is not None:
        new.register_buffer("recovery_mean", mu.detach().clone())
    for hook in module._forward_hooks.values():  # cosine layers keep their input norm
        new.register_forward_hook(hook)
    new.train(module.training)
    return new


def remove(model: nn.Module) -> nn.Module:
    """Make pruning permanent: each pruned layer becomes a plain sparse layer, in place.

    Sphere weights of pruned layers are baked too; mean-recovered layers are folded.
    A channel-pruned model loses its masked channels physically (a smaller dense model).
    """
    from .structured import is_channel_pruned, remove_channels

    if is_channel_pruned(model):
        return remove_channels(model)
    layers = pruned_layers(model)
    if not layers:
        raise ValueError("model is not pruned; nothing to remove (see pof.prune)")
    for name, m in layers:
        replace_module(model, name, fold(m))
    return model
