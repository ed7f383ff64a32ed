"""Folded layers: a permanently sparse weight plus the folded per-unit mean of the pruned
entries, ``(W - mu) * M + mu * 1``, so a mean-recovered layer stays sparse.

The all-ones part is a windowed sum of the input shared by all units of a group. A
(transposed) convolution folds it back into its kernel when it runs, ``conv(x, W' + mu)``
(a separate all-ones convolution of the input measured 1.1-1.7x, docs/results/fold_cost.md).
Without autograd (inference) that kernel is computed once and kept until the weight or
the mean changes, so a folded convolution runs exactly the plain one; with autograd it is
one add over the weight per call.
Linear-like layers add ``mu * x.sum(-1)``, an embedding ``mu`` of the token.
:func:`folded_class` maps a layer class to its folded counterpart (:func:`plain_class`
back); :class:`FoldedMultiheadAttention` computes attention itself so that its q/k/v
terms and a folded ``out_proj`` apply.
"""

from __future__ import annotations

import math
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..errors import PofError
from .sphere import Cosine, CosineConv2d, CosineLinear, no_fused_path
from .targets import is_hf_conv1d, unit_view

_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


class Folded:
    """Marker of a folded layer: sparse weight + a ``recovery_mean`` term."""

    recovery_mean: Tensor


def _kernel(m: nn.Module, unit_dim: int) -> Tensor:
    """``W' + mu`` of a folded convolution; cached while no gradient is needed."""
    w, mu = m.weight, m.recovery_mean
    if (torch.is_grad_enabled() and (w.requires_grad or mu.requires_grad)) or \
            w.is_inference() or mu.is_inference():  # inference tensors have no version
        return w + unit_view(mu, w, unit_dim)
    key = (w.data_ptr(), w._version, w.dtype, w.device, mu.data_ptr(), mu._version)
    hit = m.__dict__.get("_folded_kernel")
    if hit is None or hit[0] != key:
        hit = (key, (w + unit_view(mu, w, unit_dim)).detach())
        m.__dict__["_folded_kernel"] = hit
    return hit[1]


class _FoldedConv(Folded):
    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, _kernel(self, 0), self.bias)


class _FoldedConvTranspose(Folded):
    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        nd = len(self.kernel_size)
        pad = self._output_padding(x, output_size, self.stride, self.padding,
                                   self.kernel_size, nd, self.dilation)
        w = _kernel(self, 1)  # (in, out, *k)
        return _CONV_T[nd](x, w, self.bias, self.stride, self.padding, pad, self.groups,
                           self.dilation)


class _FoldedLastDim(Folded):
    """For layers acting on the last axis (Linear, HF Conv1D): ``+ mean * sum(x)``."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) + self.recovery_mean * x.sum(-1, keepdim=True)


class _FoldedEmbedding(Folded):
    def forward(self, idx: Tensor) -> Tensor:
        return super().forward(idx) + self.recovery_mean[idx].unsqueeze(-1)


class FoldedLinear(_FoldedLastDim, nn.Linear):
    """Linear with a sparse ``weight`` plus ``recovery_mean[o] * sum(x)``."""


class FoldedConv1d(_FoldedConv, nn.Conv1d):
    """Conv1d with a sparse ``weight`` plus ``recovery_mean[o] * windowed_sum(x)``."""


class FoldedConv2d(_FoldedConv, nn.Conv2d):
    """Conv2d with a sparse ``weight`` plus ``recovery_mean[o] * windowed_sum(x)``."""


class FoldedConv3d(_FoldedConv, nn.Conv3d):
    """Conv3d with a sparse ``weight`` plus ``recovery_mean[o] * windowed_sum(x)``."""


class FoldedConvTranspose1d(_FoldedConvTranspose, nn.ConvTranspose1d):
    """ConvTranspose1d with a sparse ``weight`` plus the mean over its input windows."""


class FoldedConvTranspose2d(_FoldedConvTranspose, nn.ConvTranspose2d):
    """ConvTranspose2d with a sparse ``weight`` plus the mean over its input windows."""


class FoldedConvTranspose3d(_FoldedConvTranspose, nn.ConvTranspose3d):
    """ConvTranspose3d with a sparse ``weight`` plus the mean over its input windows."""


class FoldedEmbedding(_FoldedEmbedding, nn.Embedding):
    """Embedding with sparse rows plus ``recovery_mean[token]`` on every entry."""


class CosineFoldedConv2d(Cosine, FoldedConv2d):
    """A folded cosine Conv2d (the input normalisation applies to the folded sum)."""


class CosineFoldedLinear(Cosine, FoldedLinear):
    """A folded cosine Linear."""


def _additive_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            mask, float("-inf"))
    return mask.to(dtype)


class FoldedMultiheadAttention(Folded, nn.MultiheadAttention):
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


_NAMED: dict[type, type] = {
    CosineConv2d: CosineFoldedConv2d, CosineLinear: CosineFoldedLinear,
    nn.Linear: FoldedLinear, nn.Conv1d: FoldedConv1d, nn.Conv2d: FoldedConv2d,
    nn.Conv3d: FoldedConv3d, nn.ConvTranspose1d: FoldedConvTranspose1d,
    nn.ConvTranspose2d: FoldedConvTranspose2d, nn.ConvTranspose3d: FoldedConvTranspose3d,
    nn.Embedding: FoldedEmbedding,
}
_MIXINS: list[tuple[type, type]] = [
    (nn.modules.conv._ConvTransposeNd, _FoldedConvTranspose),
    (nn.modules.conv._ConvNd, _FoldedConv),
    (nn.Linear, _FoldedLastDim),
    (nn.Embedding, _FoldedEmbedding),
]


@cache
def folded_class(base: type) -> type:
    """The folded counterpart of layer class ``base`` (e.g. ``nn.Conv2d -> FoldedConv2d``;
    a subclass with its own ``forward`` gets a folded subclass of its own)."""
    if base in _NAMED:
        return _NAMED[base]
    for cls, named in _NAMED.items():
        if issubclass(base, cls) and base.forward is cls.forward:
            return named
    for cls, mixin in _MIXINS:
        if issubclass(base, cls):
            return type(f"Folded{base.__name__}", (mixin, base), {})
    if is_hf_conv1d(base):
        return type(f"Folded{base.__name__}", (_FoldedLastDim, base), {})
    raise PofError(f"pof cannot fold a {base.__name__} with mean recovery")


def plain_class(cls: type) -> type:
    """The layer class a folded class stands for (the inverse of :func:`folded_class`)."""
    named = next((base for base, folded in _NAMED.items() if folded is cls), None)
    if named is not None:
        return named
    if issubclass(cls, FoldedMultiheadAttention):
        return nn.MultiheadAttention
    return next(b for b in cls.__bases__ if not issubclass(b, Folded))


def is_folded(module: nn.Module) -> bool:
    """True for a folded (mean-recovered, permanently sparse) layer."""
    return isinstance(module, Folded)


def as_folded_attention(mha: nn.MultiheadAttention, mean: Tensor | None = None,
                        ) -> FoldedMultiheadAttention:
    """``mha`` turned, in place, into a :class:`FoldedMultiheadAttention` with ``mean``
    (default zeros) added to its q/k/v projections."""
    if mha.bias_k is not None or mha.add_zero_attn or not mha._qkv_same_embed_dim:
        raise PofError("pof cannot fold a MultiheadAttention with add_bias_kv, "
                       "add_zero_attn or kdim/vdim != embed_dim")
    mha.__class__ = _folded_attention_class(mha)
    if mean is None:
        mean = mha.in_proj_weight.new_zeros(3 * mha.embed_dim)
    mha.register_buffer("recovery_mean", mean.detach().clone())
    no_fused_path(mha)
    return mha


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
