"""Making pruning permanent: each pruned layer becomes a plain, sparse layer.

A layer with mean recovery becomes a :class:`FoldedConv2d` / :class:`FoldedLinear`: a
weight with the same zeros as the mask plus ``mean * windowed_sum(input)``, so it stays
sparse. Cosine layers keep their input normalisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import PofError
from .prune import mask_param, pruned_layers
from .selection import empty_like_layer, replace_module
from .sphere import Cosine, CosineConv2d, CosineLinear, is_cosine


def _windowed_sum(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """Sum of the input over each output's receptive field, per group: ``(N, groups, H, W)``."""
    ones = torch.ones(conv.groups, conv.in_channels // conv.groups, *conv.kernel_size,
                      dtype=x.dtype, device=x.device)
    if conv.padding_mode != "zeros":
        x = F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        return F.conv2d(x, ones, None, conv.stride, 0, conv.dilation, conv.groups)
    return F.conv2d(x, ones, None, conv.stride, conv.padding, conv.dilation, conv.groups)


class FoldedConv2d(nn.Conv2d):
    """Conv2d with a sparse ``weight`` plus ``recovery_mean[o] * windowed_sum(x)``."""

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)
        s = _windowed_sum(self, x).repeat_interleave(self.out_channels // self.groups, 1)
        return out + self.recovery_mean.view(1, -1, 1, 1) * s


class FoldedLinear(nn.Linear):
    """Linear with a sparse ``weight`` plus ``recovery_mean[o] * sum(x)``."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) + self.recovery_mean * x.sum(-1, keepdim=True)


class CosineFoldedConv2d(Cosine, FoldedConv2d):
    """A folded cosine Conv2d."""


class CosineFoldedLinear(Cosine, FoldedLinear):
    """A folded cosine Linear."""


def _folded_class(module: nn.Module, folded: bool) -> type[nn.Module]:
    conv = isinstance(module, nn.Conv2d)
    if is_cosine(module):
        return (CosineFoldedConv2d if conv else CosineFoldedLinear) if folded else (
            CosineConv2d if conv else CosineLinear)
    return (FoldedConv2d if conv else FoldedLinear) if folded else (
        nn.Conv2d if conv else nn.Linear)


def fold(module: nn.Module) -> nn.Module:
    """Return a plain, permanently sparse copy of a pruned layer (folded if mean-recovered).

    The result has ``weight`` zero wherever the mask is, and for mean recovery a
    ``recovery_mean`` buffer so that its outputs equal the masked layer's.
    """
    p = mask_param(module)
    if p is None:
        raise PofError("fold() needs a pruned layer (see pof.prune)")
    with torch.no_grad():
        w = module.weight.detach().clone()
        mu = p.fill(w) if p.recover == "mean" else None
        if mu is not None:
            w = (w - mu.view(-1, *([1] * (w.dim() - 1)))) * p.mask
        else:
            w = w * p.mask
    new = empty_like_layer(module, _folded_class(module, mu is not None))
    with torch.no_grad():
        new.weight.copy_(w)
        if module.bias is not None:
            new.bias.copy_(module.bias.detach())
    if mu is not None:
        new.register_buffer("recovery_mean", mu.detach().clone())
    return new


def remove(model: nn.Module) -> nn.Module:
    """Make pruning permanent: each pruned layer becomes a plain sparse layer, in place.

    Sphere weights of pruned layers are baked too; mean-recovered layers are folded.
    """
    layers = pruned_layers(model)
    if not layers:
        raise PofError("model is not pruned; nothing to remove (see pof.prune)")
    for name, m in layers:
        replace_module(model, name, fold(m))
    return model
