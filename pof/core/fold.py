"""Making pruning permanent: each pruned weight becomes a plain, sparse one.

A weight with zero recovery is baked in (the layer keeps its class); one with mean
recovery turns its layer into a folded layer (:mod:`pof.core.folded`): a weight with the
same zeros as the mask plus ``mean * windowed_sum(input)``, so it stays sparse on
disk (convolutions add the mean to the kernel when they run: the zero-pruned cost). Sphere
weights of pruned layers are baked too; cosine layers keep their input normalisation.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..errors import PofError
from .channel_masks import is_channel_pruned
from .folded import as_folded_attention, folded_class, is_folded, plain_class
from .parametrizations import mask_param, pruned_attrs, pruned_layers, remove_parametrization
from .selection import replace_module
from .sphere import no_fused_path
from .targets import unit_view, weight_target


def _plain_copy(module: nn.Module, attr: str, w: Tensor) -> nn.Module:
    """A copy of ``module`` without parametrizations on ``attr``, whose weight is ``w``."""
    new = copy.deepcopy(module)
    remove_parametrization(new, attr, leave_parametrized=False)  # on a class of its own
    with torch.no_grad():
        getattr(new, attr).copy_(w)
    return new


def fold(module: nn.Module, attr: str | None = None) -> nn.Module:
    """Return a plain, permanently sparse copy of a pruned layer (folded if mean-recovered).

    ``attr`` is the pruned weight (default: the layer's first). The result has it zero
    wherever the mask is, and for mean recovery a ``recovery_mean`` buffer so that its
    outputs equal the masked layer's.
    """
    attr = attr or next(iter(pruned_attrs(module)), None)
    p = mask_param(module, attr) if attr else None
    if p is None:
        raise PofError("fold() needs a pruned layer (see pof.prune)")
    with torch.no_grad():
        w = getattr(module, attr).detach().clone()
        mu = p.fill(w) if p.recover == "mean" else None
        if mu is not None:
            w = (w - unit_view(mu, w, p.unit_dim)) * p.mask
        else:
            w = w * p.mask
    base = parametrize.type_before_parametrizations(module)
    new = _plain_copy(module, attr, w)
    if isinstance(new, nn.MultiheadAttention):
        if mu is not None or is_folded(new.out_proj):
            return as_folded_attention(new, mu)
        return new
    if mu is not None:
        new.__class__ = folded_class(base)
        new.register_buffer("recovery_mean", mu.detach().clone())
        no_fused_path(new)
    return new


def remove(model: nn.Module) -> nn.Module:
    """Make pruning permanent: each pruned weight becomes a plain sparse one, in place.

    Sphere weights of pruned layers are baked too; mean-recovered layers are folded. An
    attention block whose ``out_proj`` got folded computes attention itself from then on
    (:class:`~pof.core.folded.FoldedMultiheadAttention`), so that the folded term applies.
    Channel masks are refused: :func:`pof.remove_channels` removes those channels.
    """
    if is_channel_pruned(model):
        raise PofError("model has channel masks: pof.remove_channels(model) removes the "
                       "channels (a smaller dense model); pof.unprune(model) undoes them")
    layers = pruned_layers(model)
    if not layers:
        raise PofError("model is not pruned; nothing to remove (see pof.prune)")
    for name, m in layers:
        if isinstance(m, nn.MultiheadAttention):
            continue  # after its out_proj, which it may have to call as a module
        replace_module(model, name, _fold_all(m))
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.MultiheadAttention):
            if pruned_attrs(m):
                replace_module(model, name, _fold_all(m))
            elif is_folded(m.out_proj) and not is_folded(m):
                replace_module(model, name, as_folded_attention(m))
    _refuse_lossy_save_pretrained(model)
    return model


def _refuse_lossy_save_pretrained(model: nn.Module) -> None:
    """A Hugging Face model with folded means: its ``save_pretrained`` raises instead of
    writing a file whose ``from_pretrained`` drops the ``recovery_mean`` buffers."""
    if not callable(getattr(model, "save_pretrained", None)) or not any(
            is_folded(m) for m in model.modules()):
        return

    def save_pretrained(*args: object, **kwargs: object) -> None:
        raise PofError("save_pretrained would lose this model's folded means (recovery_mean, "
                       "which from_pretrained drops): save it with pof.save(model, "
                       "'m.safetensors') and load it with pof.load('m.safetensors', "
                       "model=<a fresh model>), or prune with recover='zero'")

    model.save_pretrained = save_pretrained


def _fold_all(m: nn.Module) -> nn.Module:
    for attr in pruned_attrs(m):
        m = fold(m, attr)
    return m


def as_dense(module: nn.Module) -> nn.Module:
    """A plain copy of a folded layer (the class it was folded from) whose weight is the
    effective one, ``weight + mean``, dense. For exporters, which then fuse it with a
    following BatchNorm like any other layer."""
    if not is_folded(module) or parametrize.is_parametrized(module):
        raise PofError(f"as_dense() needs a folded layer without parametrizations, got "
                       f"{type(module).__name__}")
    new = copy.deepcopy(module)
    target, _ = weight_target("", new)
    w = getattr(new, target.attr)
    with torch.no_grad():
        w.add_(unit_view(new.recovery_mean, w, target.unit_dim))
    del new._buffers["recovery_mean"]
    new.__class__ = plain_class(type(module))
    return new
