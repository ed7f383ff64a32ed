"""One-shot magnitude pruning with zero or mean recovery, reversible until ``remove``.

``prune`` adds a :class:`PruneMask` parametrization to each selected weight (after the
sphere parametrization, if any), the way ``torch.nn.utils.prune`` keeps masks on the
module. ``unprune`` takes the masks off again; ``remove`` makes them permanent. A layer
with mean recovery becomes a folded layer (:class:`FoldedConv2d`, :class:`FoldedLinear`,
:class:`FoldedMultiheadAttention`, ...): a weight with the same zeros as the mask plus
``mean * windowed_sum(input)``, so it stays sparse.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .masks import check_sparsity, compute_masks, parse_nm
from .selection import (
    Target,
    from_units,
    is_hf_conv1d,
    replace_module,
    select_weights,
    to_units,
    unit_view,
)

RECOVER = ("zero", "mean")
MEAN_SCOPES = ("unit", "layer")


class PruneMask(nn.Module):
    """Parametrization: keep masked weights; fill pruned ones with 0 or their mean.

    ``recover="mean"`` replaces pruned entries by the mean of the pruned values, per
    output unit (``mean_scope="unit"``) or over the layer (``"layer"``; over each of the
    ``groups`` unit blocks, e.g. q/k/v). ``unit_dim`` is the weight's output-unit axis.
    """

    def __init__(self, mask: Tensor, recover: str = "zero", mean_scope: str = "unit",
                 unit_dim: int = 0, groups: int = 1) -> None:
        super().__init__()
        if recover not in RECOVER:
            raise ValueError(f"recover must be one of {RECOVER}, got {recover!r}")
        if mean_scope not in MEAN_SCOPES:
            raise ValueError(f"mean_scope must be one of {MEAN_SCOPES}, got {mean_scope!r}")
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


def _mask_param(module: nn.Module, attr: str | None = None) -> PruneMask | None:
    """The :class:`PruneMask` on ``module``'s weight ``attr`` (default: any weight)."""
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
    return [a for a in module.parametrizations.keys() if _mask_param(module, a) is not None]


def is_pruned(module: nn.Module) -> bool:
    """True if ``module`` carries a pof prune mask."""
    return _mask_param(module) is not None


def pruned_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every layer with a prune mask."""
    return [(n, m) for n, m in model.named_modules() if is_pruned(m)]


def target_masks(targets: list[Target], sparsity: float, scope: str = "layer",
                 pattern: str | None = None) -> list[Tensor]:
    """Keep-masks shaped like each target's weight; unit groups (q/k/v) count as layers."""
    with torch.no_grad():
        pieces = [p.detach() for t in targets for p in t.pieces()]
    names = [n for t in targets for n in t.piece_names()]
    flat = compute_masks(pieces, sparsity, scope, pattern, names)
    out, i = [], 0
    for t in targets:
        out.append(from_units(torch.cat(flat[i:i + t.groups]), t.unit_dim))
        i += t.groups
    return out


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
    targets = select_weights(model, include, exclude, keep_first_conv)
    already = [n for n, _ in pruned_layers(model)]
    if already:
        raise ValueError(
            f"model is already pruned ({already[0]!r}, ...): call pof.remove(model) to make "
            "that permanent, or pof.unprune(model) to undo it, before pruning again"
        )
    masks = target_masks(targets, sparsity or 0.0, scope, pattern)
    for t, mask in zip(targets, masks, strict=True):
        parametrize.register_parametrization(
            t.module, t.attr, PruneMask(mask, recover, mean_scope, t.unit_dim, t.groups),
            unsafe=True)  # shapes match by construction
    return model


def _remove_parametrization(m: nn.Module, attr: str, leave_parametrized: bool) -> None:
    """Remove ``attr``'s parametrizations, keeping it first among the parameters (as
    layers register it: ``weight`` before ``bias``)."""
    parametrize.remove_parametrizations(m, attr, leave_parametrized=leave_parametrized)
    for k in [attr, *[k for k in m._parameters if k != attr]]:
        m._parameters[k] = m._parameters.pop(k)


def unprune(model: nn.Module) -> nn.Module:
    """Take the prune masks off again, restoring the weights as they were before."""
    from .structured import clear_channel_plan

    clear_channel_plan(model)
    for _, m in pruned_layers(model):
        for attr in pruned_attrs(m):
            plist = m.parametrizations[attr]
            if len(plist) == 1:
                _remove_parametrization(m, attr, leave_parametrized=False)
            else:
                idx = next(i for i, p in enumerate(plist) if isinstance(p, PruneMask))
                del plist[idx]
    return model


# ---------------------------------------------------------------- folded layers
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


class _Folded:
    """Marker of a folded layer: sparse weight + a ``recovery_mean`` term."""

    recovery_mean: Tensor


class _FoldedConvMixin(_Folded):
    """``mean * windowed_sum(x)`` folded into the kernel at run time, ``conv(x, weight +
    mean)``: one add over the weight instead of a second pass over the activations, so the
    layer costs what the zero-pruned one does (the stored ``weight`` keeps its zeros)."""

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight + unit_view(self.recovery_mean, self.weight, 0)
        return self._conv_forward(x, w, self.bias)


class _FoldedConvTransposeMixin(_Folded):
    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        out = super().forward(x, output_size)
        nd = len(self.kernel_size)
        pad = self._output_padding(x, output_size, self.stride, self.padding,
                                   self.kernel_size, nd, self.dilation)
        ones = torch.ones(self.in_channels, 1, *self.kernel_size, dtype=x.dtype,
                          device=x.device)  # groups == 1 (grouped ones are not selected)
        s = _CONV_T[nd](x, ones, None, self.stride, self.padding, pad, 1, self.dilation)
        return out + unit_view(self.recovery_mean, out, 1) * s


class _FoldedLastDimMixin(_Folded):
    """For layers acting on the last axis (Linear, HF Conv1D): ``+ mean * sum(x)``."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) + self.recovery_mean * x.sum(-1, keepdim=True)


class _FoldedEmbeddingMixin(_Folded):
    def forward(self, idx: Tensor) -> Tensor:
        return super().forward(idx) + self.recovery_mean[idx].unsqueeze(-1)


class FoldedLinear(_FoldedLastDimMixin, nn.Linear):
    """Linear with a sparse ``weight`` plus ``recovery_mean[o] * sum(x)``."""


class FoldedConv1d(_FoldedConvMixin, nn.Conv1d):
    """Conv1d with a sparse ``weight`` plus ``recovery_mean[o] * windowed_sum(x)``."""


class FoldedConv2d(_FoldedConvMixin, nn.Conv2d):
    """Conv2d with a sparse ``weight`` plus ``recovery_mean[o] * windowed_sum(x)``."""


class FoldedConv3d(_FoldedConvMixin, nn.Conv3d):
    """Conv3d with a sparse ``weight`` plus ``recovery_mean[o] * windowed_sum(x)``."""


class FoldedConvTranspose1d(_FoldedConvTransposeMixin, nn.ConvTranspose1d):
    """ConvTranspose1d with a sparse ``weight`` plus the mean over its input windows."""


class FoldedConvTranspose2d(_FoldedConvTransposeMixin, nn.ConvTranspose2d):
    """ConvTranspose2d with a sparse ``weight`` plus the mean over its input windows."""


class FoldedConvTranspose3d(_FoldedConvTransposeMixin, nn.ConvTranspose3d):
    """ConvTranspose3d with a sparse ``weight`` plus the mean over its input windows."""


class FoldedEmbedding(_FoldedEmbeddingMixin, nn.Embedding):
    """Embedding with sparse rows plus ``recovery_mean[token]`` on every entry."""


def _additive_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            mask, float("-inf"))
    return mask.to(dtype)


class FoldedMultiheadAttention(_Folded, nn.MultiheadAttention):
    """MultiheadAttention with a sparse ``in_proj_weight`` plus ``recovery_mean[o] * sum(x)``.

    It computes attention itself (not the fused kernels, which read the weights directly),
    so that a folded ``out_proj`` is applied as a module too.
    """

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Tensor | None = None, need_weights: bool = True,
                attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        batched = query.dim() == 3
        if not batched:
            query, key, value = (t.unsqueeze(0 if self.batch_first else 1)
                                 for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        n, length, e = query.shape
        src, h = key.shape[1], self.num_heads
        d = e // h
        ws = self.in_proj_weight.chunk(3)
        bs = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None,) * 3
        mus = self.recovery_mean.chunk(3)
        q, k, v = (F.linear(x, w, b) + mu * x.sum(-1, keepdim=True)
                   for x, w, b, mu in zip((query, key, value), ws, bs, mus, strict=True))
        q = q.view(n, length, h, d).transpose(1, 2)
        k = k.view(n, src, h, d).transpose(1, 2)
        v = v.view(n, src, h, d).transpose(1, 2)
        mask = None
        if attn_mask is not None:
            mask = _additive_mask(attn_mask, q.dtype)
            mask = mask.view(n, h, length, src) if mask.dim() == 3 else mask
        elif is_causal:
            mask = torch.ones(length, src, dtype=torch.bool, device=q.device).triu(1)
            mask = _additive_mask(mask, q.dtype)
        if key_padding_mask is not None:
            pad = _additive_mask(key_padding_mask, q.dtype).view(n, 1, 1, src)
            mask = pad if mask is None else mask + pad
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(d)
            if mask is not None:
                scores = scores + mask
            weights = scores.softmax(-1)
            out = F.dropout(weights, p) @ v
            weights = weights.mean(1) if average_attn_weights else weights
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        out = self.out_proj(out.transpose(1, 2).reshape(n, length, e))
        if not self.batch_first:
            out = out.transpose(0, 1)
        if not batched:
            out = out.squeeze(0 if self.batch_first else 1)
            weights = weights.squeeze(0) if weights is not None else None
        return out, weights


_FOLDED_MIXINS: list[tuple[type, type]] = [
    (nn.modules.conv._ConvTransposeNd, _FoldedConvTransposeMixin),
    (nn.modules.conv._ConvNd, _FoldedConvMixin),
    (nn.Linear, _FoldedLastDimMixin),
    (nn.Embedding, _FoldedEmbeddingMixin),
]
_NAMED: dict[type, type] = {
    nn.Linear: FoldedLinear, nn.Conv1d: FoldedConv1d, nn.Conv2d: FoldedConv2d,
    nn.Conv3d: FoldedConv3d, nn.ConvTranspose1d: FoldedConvTranspose1d,
    nn.ConvTranspose2d: FoldedConvTranspose2d, nn.ConvTranspose3d: FoldedConvTranspose3d,
    nn.Embedding: FoldedEmbedding,
}


@cache
def folded_class(base: type) -> type:
    """The folded counterpart of layer class ``base`` (e.g. ``nn.Conv2d -> FoldedConv2d``)."""
    for cls, named in _NAMED.items():
        if issubclass(base, cls) and base.forward is cls.forward:
            return named
    for cls, mixin in _FOLDED_MIXINS:
        if issubclass(base, cls):
            return type(f"Folded{base.__name__}", (mixin, base), {})
    if is_hf_conv1d(base):
        return type(f"Folded{base.__name__}", (_FoldedLastDimMixin, base), {})
    raise ValueError(f"pof cannot fold a {base.__name__} with mean recovery")


def is_folded(module: nn.Module) -> bool:
    """True for a folded (mean-recovered, permanently sparse) layer."""
    return isinstance(module, _Folded)


def _plain_copy(module: nn.Module, attr: str, w: Tensor) -> nn.Module:
    """A copy of ``module`` without pof parametrizations on ``attr``, whose weight is ``w``."""
    new = copy.deepcopy(module)
    new.__dict__.pop("_pof_cosine_handle", None)
    _remove_parametrization(new, attr, leave_parametrized=False)
    with torch.no_grad():
        getattr(new, attr).copy_(w)
    return new


def _folded_attention_class(mha: nn.MultiheadAttention) -> type:
    cls = type(mha)
    if issubclass(cls, FoldedMultiheadAttention):
        return cls
    if not parametrize.is_parametrized(mha):
        return FoldedMultiheadAttention
    # in_proj still parametrized (on the sphere): a per-module class like parametrize's own,
    # with its weight properties, on top of the folded class (removing the last
    # parametrization then leaves a plain FoldedMultiheadAttention)
    dct = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    return type(f"ParametrizedFolded{cls.__bases__[0].__name__}",
                (FoldedMultiheadAttention,), dct)


def as_folded_attention(mha: nn.MultiheadAttention, mean: Tensor | None = None,
                        ) -> FoldedMultiheadAttention:
    """``mha`` turned, in place, into a :class:`FoldedMultiheadAttention` with ``mean``
    (default zeros) added to its q/k/v projections."""
    if mha.bias_k is not None or mha.add_zero_attn or not mha._qkv_same_embed_dim:
        raise ValueError("pof cannot fold a MultiheadAttention with add_bias_kv, "
                         "add_zero_attn or kdim/vdim != embed_dim")
    mha.__class__ = _folded_attention_class(mha)
    if mean is None:
        mean = mha.in_proj_weight.new_zeros(3 * mha.embed_dim)
    mha.register_buffer("recovery_mean", mean.detach().clone())
    _no_fused_path(mha)
    return mha


def _identity_pre_hook(module: nn.Module, args: tuple) -> None:
    return None


def _no_fused_path(module: nn.Module) -> None:
    """Keep ``nn.TransformerEncoderLayer`` off its fused kernel, which reads the weights
    directly and would skip the folded mean (it is disabled by any forward hook)."""
    if _identity_pre_hook not in module._forward_pre_hooks.values():
        module.register_forward_pre_hook(_identity_pre_hook)


def fold(module: nn.Module, attr: str | None = None) -> nn.Module:
    """Return a plain, permanently sparse copy of a pruned layer (folded if mean-recovered).

    The result has its weight zero wherever the mask is, and for mean recovery a
    ``recovery_mean`` buffer so that its outputs equal the masked layer's.
    """
    attr = attr or next(iter(pruned_attrs(module)), None)
    p = _mask_param(module, attr) if attr else None
    if p is None:
        raise ValueError("fold() needs a pruned layer (see pof.prune)")
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
        _no_fused_path(new)
    return new


def remove(model: nn.Module) -> nn.Module:
    """Make pruning permanent: each pruned weight becomes a plain sparse one, in place.

    Sphere weights of pruned layers are baked too; mean-recovered layers are folded. An
    attention block whose ``out_proj`` got folded computes attention itself from then on
    (:class:`FoldedMultiheadAttention`), so that the folded term is applied.
    """
    from .structured import is_channel_pruned, remove_channels

    if is_channel_pruned(model):  # channels go physically: a smaller dense model
        return remove_channels(model)
    layers = pruned_layers(model)
    if not layers:
        raise ValueError("model is not pruned; nothing to remove (see pof.prune)")
    for name, m in layers:
        if isinstance(m, nn.MultiheadAttention):
            continue  # after its out_proj, which it may have to call as a module
        replace_module(model, name, _fold_all(m))
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.MultiheadAttention):
            if is_pruned(m):
                replace_module(model, name, _fold_all(m))
            elif is_folded(m.out_proj) and not is_folded(m):
                replace_module(model, name, as_folded_attention(m))
    return model


def _fold_all(m: nn.Module) -> nn.Module:
    for attr in pruned_attrs(m):
        m = fold(m, attr)
    return m
