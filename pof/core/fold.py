"""Making pruning permanent: each pruned layer becomes a plain, sparse layer.

A layer with mean recovery becomes a :class:`FoldedConv2d` / :class:`FoldedLinear`: a
weight with the same zeros as the mask plus ``mean * windowed_sum(input)``, so it stays
sparse on disk; the mean is folded back into the kernel when the layer runs (one add over
the weight, the cost of the zero-pruned layer). Cosine layers keep their input
normalisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import PofError
from .channel_masks import is_channel_pruned
from .prune import mask_param, pruned_layers
from .selection import empty_like_layer, replace_module
from .sphere import Cosine, CosineConv2d, CosineLinear, is_cosine


class FoldedConv2d(nn.Conv2d):
    """Conv2d with a sparse ``weight`` plus ``recovery_mean[o] * windowed_sum(x)``.

    The extra term is folded into the kernel at run time, ``conv(x, weight + mean)``: one
    add over the weight instead of a second pass over the activations, so the layer costs
    what the zero-pruned one does (the stored ``weight`` keeps the mask's zeros).
    """

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight + self.recovery_mean.view(-1, 1, 1, 1),
                                  self.bias)


class FoldedLinear(nn.Linear):
    """Linear with a sparse ``weight`` plus ``recovery_mean[o] * sum(x)``, folded at run time."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight + self.recovery_mean.view(-1, 1), self.bias)


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
    Channel masks are refused: :func:`pof.remove_channels` removes those channels.
    """
    if is_channel_pruned(model):
        raise PofError("model has channel masks: pof.remove_channels(model) removes the "
                       "channels (a smaller dense model); pof.unprune(model) undoes them")
    layers = pruned_layers(model)
    if not layers:
        raise PofError("model is not pruned; nothing to remove (see pof.prune)")
    for name, m in layers:
        replace_module(model, name, fold(m))
    return model


def as_dense(module: nn.Module) -> nn.Module:
    """A plain (unfolded) copy of a folded layer: its effective weight, ``weight + mean``,
    dense. For exporters, which then fuse it with a following BatchNorm like any layer."""
    if not isinstance(module, FoldedConv2d | FoldedLinear):
        raise PofError(f"as_dense() needs a folded layer, got {type(module).__name__}")
    new = empty_like_layer(module, _folded_class(module, folded=False))
    mu = module.recovery_mean.view(-1, *([1] * (module.weight.dim() - 1)))
    with torch.no_grad():
        new.weight.copy_(module.weight + mu)
        if module.bias is not None:
            new.bias.copy_(module.bias)
    return new
