"""Hyperspherical layers: each output unit's weight vector lives on the unit sphere.

``to_sphere`` reparametrises the selected weights (see :mod:`pof.core.targets`: Linear,
convs, attention projections, ...) as ``w / ||w||`` per output unit with
:mod:`torch.nn.utils.parametrize`. Converting a trained plain model keeps its
eval-mode function: a BatchNorm that directly follows a layer absorbs the per-unit norm
(running statistics and affine weight are rescaled); a layer with no such BatchNorm keeps a
learnable per-unit ``scale``. ``from_sphere`` bakes the weights back into a plain model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..errors import PofError
from .model_info import following_norms
from .parametrizations import is_pruned, own_class, register
from .selection import (
    Patterns,
    empty_like_layer,
    record_selection,
    replace_module,
    resolve_selection,
    select_weights,
)
from .targets import Target, to_units, unit_view

COSINE_KINDS = (nn.Conv2d, nn.Linear)  # the layers that have a cosine form


def row_norms(w: Tensor, eps: float = 1e-12, unit_dim: int = 0) -> Tensor:
    """L2 norm of each output unit's weight vector (shape ``(units,)``)."""
    return to_units(w, unit_dim).flatten(1).norm(dim=1).clamp_min(eps)


class UnitSphere(nn.Module):
    """Parametrization ``w -> scale * w / ||w||`` per output unit (``scale`` optional).

    With a scale this is ``torch.nn.utils.parametrizations.weight_norm(dim=0)`` (``g`` =
    ``scale``); it stays a class of its own for the scale-free form (a following BatchNorm
    absorbs the norm) and for the ``state_dict`` keys saved checkpoints hold. ``unit_dim``
    is the weight's output-unit axis (1 for ConvTranspose and HF Conv1D).
    """

    def __init__(self, scale: Tensor | None = None, eps: float = 1e-12,
                 unit_dim: int = 0) -> None:
        super().__init__()
        self.eps = eps
        self.unit_dim = unit_dim
        self.scale = None if scale is None else nn.Parameter(scale.detach().clone())

    def forward(self, w: Tensor) -> Tensor:
        w = w / unit_view(row_norms(w, self.eps, self.unit_dim), w, self.unit_dim)
        return w if self.scale is None else w * unit_view(self.scale, w, self.unit_dim)

    def right_inverse(self, w: Tensor) -> Tensor:
        return w


def sphere_attrs(module: nn.Module) -> list[str]:
    """Names of ``module``'s own weights that are parametrized by :class:`UnitSphere`."""
    if not parametrize.is_parametrized(module):
        return []
    return [a for a, plist in module.parametrizations.items()
            if any(isinstance(p, UnitSphere) for p in plist)]


def is_sphere(module: nn.Module, attr: str | None = None) -> bool:
    """True if ``module``'s weight ``attr`` (default: any of its weights) is on the sphere."""
    attrs = sphere_attrs(module)
    return bool(attrs) if attr is None else attr in attrs


def sphere_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """All ``(name, module)`` in ``model`` with a weight on the sphere."""
    return [(n, m) for n, m in model.named_modules() if is_sphere(m)]


def _absorb_into_norm(layer: nn.Module, bn: nn.Module, n: Tensor) -> None:
    """Rescale ``bn`` so that ``bn(layer(x) / n)`` equals ``bn(layer(x))`` in eval mode."""
    if layer.bias is not None:
        layer.bias.div_(n)
    rv = bn.running_var
    bn.weight.mul_(torch.sqrt((rv + bn.eps * n**2) / (rv + bn.eps)))
    bn.running_mean.div_(n)
    bn.running_var.div_(n**2)


def cosine_normalise(module: nn.Module, x: Tensor, out: Tensor) -> Tensor:
    """Divide a layer's output ``out`` by the L2 norm of each input receptive field of ``x``
    (SphereNet's cosine layers); the bias is added back after the division."""
    if isinstance(module, nn.Linear):
        norm = x.norm(dim=-1, keepdim=True)
    else:
        ones = torch.ones(
            module.groups, module.in_channels // module.groups, *module.kernel_size,
            dtype=x.dtype, device=x.device,
        )
        sq = F.conv2d(x * x, ones, None, module.stride, module.padding, module.dilation,
                      module.groups)
        norm = sq.clamp_min(0).sqrt().repeat_interleave(module.out_channels // module.groups, 1)
    bias = module.bias
    if bias is None:
        return out / (norm + 1e-6)
    b = bias.view(1, -1, *([1] * (out.dim() - 2))) if out.dim() > 2 else bias
    return (out - b) / (norm + 1e-6) + b


class Cosine:
    """Mixin for a Conv2d/Linear class: its output is normalised by :func:`cosine_normalise`."""

    def forward(self, x: Tensor) -> Tensor:
        return cosine_normalise(self, x, super().forward(x))


class CosineConv2d(Cosine, nn.Conv2d):
    """Conv2d whose output is divided by the norm of each input receptive field."""


class CosineLinear(Cosine, nn.Linear):
    """Linear whose output is divided by the norm of its input."""


def is_cosine(module: nn.Module) -> bool:
    """True for a cosine layer (see ``to_sphere(cosine=True)``)."""
    return isinstance(module, Cosine)


def _identity_pre_hook(module: nn.Module, args: tuple) -> None:
    return None


def no_fused_path(module: nn.Module) -> None:
    """Keep ``nn.TransformerEncoderLayer`` off its fused inference kernel, which reads the
    weights directly and would skip ``module``'s own forward (any forward hook disables it)."""
    if _identity_pre_hook not in module._forward_pre_hooks.values():
        module.register_forward_pre_hook(_identity_pre_hook)


def as_cosine(module: nn.Module) -> nn.Module:
    """A cosine layer sharing ``module``'s parameters (``module`` must not be parametrized)."""
    cls = CosineConv2d if isinstance(module, nn.Conv2d) else CosineLinear
    new = empty_like_layer(module, cls)
    new.weight, new.bias = module.weight, module.bias
    no_fused_path(new)
    return new


def to_sphere(
    model: nn.Module,
    include: Patterns = None,
    exclude: Patterns = None,
    cosine: bool = False,
    keep_first_conv: bool | None = None,
) -> nn.Module:
    """Put the selected weights on the unit sphere per output unit, in place.

    Default selection: every Linear, conv, attention ``in_proj_weight`` and HF ``Conv1D``
    weight except the network's first conv and embeddings (see :func:`pof.select_weights`).
    Plain mode keeps the eval-mode outputs of a trained model (to float rounding): a
    directly following BatchNorm absorbs the norms, any other weight keeps a per-unit
    ``scale`` (a LayerNorm normalises across units, so it cannot). ``cosine=True`` (Conv2d
    and Linear only) also divides each output by the norm of its input receptive field
    (SphereNet's cosine layers); that changes the function, so use it when training from
    scratch. The selection is recorded on ``model``. Returns ``model``.
    """
    sel = resolve_selection(model, include, exclude, keep_first_conv)
    targets = select_weights(model, sel.include, sel.exclude, sel.keep_first_conv)
    for t in targets:
        if parametrize.is_parametrized(t.module, t.attr):
            raise PofError(
                f"weight {t.key!r} is already parametrized (on the sphere or pruned); "
                "call pof.remove(model) / pof.from_sphere(model) first"
            )
        if cosine and not isinstance(t.module, COSINE_KINDS):
            raise PofError(f"cosine=True supports Conv2d and Linear only, not {t.key!r} "
                           f"({type(t.module).__name__}); exclude it")
    pairs = following_norms(model)
    mods = dict(model.named_modules())
    if cosine:
        targets = [_to_cosine(model, t) for t in targets]
    with torch.no_grad():
        for t in targets:
            m = t.module
            n = row_norms(t.weight, unit_dim=t.unit_dim)
            bn = mods[pairs[t.name]] if t.attr == "weight" and t.name in pairs else None
            if bn is not None and bn.affine and bn.track_running_stats and not cosine:
                _absorb_into_norm(m, bn, n)
                param = UnitSphere(unit_dim=t.unit_dim)
            else:
                param = UnitSphere(scale=n if not cosine else torch.ones_like(n),
                                   unit_dim=t.unit_dim)
            register(m, t.attr, param)
    record_selection(model, sel)
    return model


def _to_cosine(model: nn.Module, t: Target) -> Target:
    new = as_cosine(t.module)
    replace_module(model, t.name, new)
    return Target(t.name, new, t.attr, t.unit_dim, t.groups)


def from_sphere(model: nn.Module) -> nn.Module:
    """Bake sphere weights into plain weight tensors with the same outputs, in place.

    Pruned layers (``pof.prune``) must be made permanent with ``pof.remove`` first.
    """
    layers = sphere_layers(model)
    if not layers:
        raise PofError("model has no sphere layer; nothing to convert (see pof.to_sphere)")
    for name, m in layers:
        if is_pruned(m):
            raise PofError(f"layer {name!r} is pruned; call pof.remove(model) first")
        if is_cosine(m):
            raise PofError(
                f"layer {name!r} is a cosine layer (it normalises its inputs); "
                "a plain layer cannot reproduce it"
            )
    for _, m in layers:
        for attr in sphere_attrs(m):
            parametrize.remove_parametrizations(own_class(m), attr, leave_parametrized=True)
    return model
