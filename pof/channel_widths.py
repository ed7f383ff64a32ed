"""Layer widths of a channel-pruned model, so that a checkpoint can rebuild it.

After channels are removed (``pof.structured``), :func:`record_widths` notes every
Conv2d / Linear / BatchNorm's sizes on the model; the checkpoint stores them in its JSON
metadata, and :func:`apply_widths` resizes a fresh registry model to match before its
``state_dict`` is loaded. No pickle, no Torch-Pruning needed to load.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .selection import replace_module

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def layer_width(m: nn.Module) -> dict[str, Any] | None:
    """The sizes that define ``m``'s parameters, or None for other modules."""
    if isinstance(m, nn.Conv2d):
        return {"in": m.in_channels, "out": m.out_channels, "groups": m.groups,
                "bias": m.bias is not None}
    if isinstance(m, nn.Linear):
        return {"in": m.in_features, "out": m.out_features, "bias": m.bias is not None}
    if isinstance(m, _NORMS):
        return {"features": m.num_features}
    return None


def record_widths(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Note every layer's sizes on ``model`` (``model._pof_widths``) and return them."""
    widths = {n: w for n, m in model.named_modules() if (w := layer_width(m)) is not None}
    model._pof_widths = widths
    return widths


def _resized(m: nn.Module, w: dict[str, Any]) -> nn.Module:
    if isinstance(m, nn.Conv2d):
        return type(m)(w["in"], w["out"], m.kernel_size, m.stride, m.padding, m.dilation,
                       w["groups"], w["bias"], m.padding_mode)
    if isinstance(m, nn.Linear):
        return type(m)(w["in"], w["out"], w["bias"])
    return type(m)(w["features"], m.eps, m.momentum, m.affine, m.track_running_stats)


def apply_widths(model: nn.Module, widths: dict[str, dict[str, Any]]) -> nn.Module:
    """Resize ``model``'s layers to ``widths`` (from :func:`record_widths`), in place.

    Raises ``ValueError`` naming a layer the model lacks or of another kind.
    """
    mods = dict(model.named_modules())
    for name, w in widths.items():
        m = mods.get(name)
        if m is None or layer_width(m) is None or set(layer_width(m)) != set(w):
            raise ValueError(f"checkpoint gives widths for layer {name!r}, which this model "
                             "lacks or has of another kind")
        if layer_width(m) != w:
            new = _resized(m, w)
            new.train(m.training)
            replace_module(model, name, new)
    model._pof_widths = dict(widths)
    return model
