"""Layer widths of a channel-pruned model, so that a checkpoint can rebuild it.

After channels are removed (:func:`pof.remove_channels`), :func:`record_widths` notes
every Conv2d / Linear / BatchNorm's sizes on the model (``model.pof_widths``); checkpoints
store them in their JSON metadata (``widths``), and :func:`apply_widths` resizes a fresh
registry model to match before its ``state_dict`` is loaded. No pickle, and no
Torch-Pruning needed to load.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import CheckpointError
from .channel_masks import is_channel_pruned
from .selection import replace_module

WIDTHS_ATTR = "pof_widths"
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
    """Note every layer's sizes on ``model`` and return them."""
    widths = {n: w for n, m in model.named_modules() if (w := layer_width(m)) is not None}
    object.__setattr__(model, WIDTHS_ATTR, widths)
    return widths


def widths_meta(model: nn.Module) -> dict[str, dict[str, Any]] | None:
    """The recorded widths as plain data for a checkpoint (None for a model at its
    registry widths). Raises :class:`CheckpointError` for a model with channel masks,
    which a checkpoint cannot hold: remove (or unprune) the channels first."""
    if is_channel_pruned(model):
        raise CheckpointError("model has channel masks: pof.remove_channels(model) removes "
                              "the channels before saving (or pof.unprune(model) undoes them)")
    return getattr(model, WIDTHS_ATTR, None)


def _resized(m: nn.Module, w: dict[str, Any]) -> nn.Module:
    if isinstance(m, nn.Conv2d):
        new = type(m)(w["in"], w["out"], m.kernel_size, m.stride, m.padding, m.dilation,
                      w["groups"], w["bias"], m.padding_mode)
    elif isinstance(m, nn.Linear):
        new = type(m)(w["in"], w["out"], w["bias"])
    else:
        new = type(m)(w["features"], m.eps, m.momentum, m.affine, m.track_running_stats)
    new.train(m.training)
    return new


def _valid(w: Any, own: dict[str, Any]) -> bool:
    """``w`` has ``own``'s keys and types, sizes from 1 up to the layer's own (removing
    channels only shrinks a layer), and groups that divide both channel counts."""
    ok = isinstance(w, dict) and set(w) == set(own) and all(
        isinstance(v, bool) if k == "bias" else
        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= own[k]
        for k, v in w.items())
    return ok and ("groups" not in w or w["in"] % w["groups"] == w["out"] % w["groups"] == 0)


def apply_widths(model: nn.Module, widths: Any, where: str = "checkpoint") -> nn.Module:
    """Resize ``model``'s layers to ``widths`` (from :func:`record_widths`), in place;
    None leaves it as it is. Raises :class:`CheckpointError` (naming ``where``) for a layer
    the model lacks, of another kind, or sizes of the wrong type or larger than the
    model's own (checked before any layer is resized)."""
    if widths is None:
        return model
    if not isinstance(widths, dict):
        raise CheckpointError(f"{where}: metadata 'widths' is a {type(widths).__name__}, "
                              "expected a mapping of layer names")
    mods = dict(model.named_modules())
    for name, w in widths.items():
        m = mods.get(name)
        now = None if m is None else layer_width(m)
        if now is None:
            raise CheckpointError(f"{where}: checkpoint gives widths for layer {name!r}, "
                                  "which this model lacks or has of another kind")
        if not _valid(w, now):
            raise CheckpointError(f"{where}: metadata 'widths' of layer {name!r} is "
                                  f"malformed or larger than the model's {now}: {w!r:.80}")
    for name, w in widths.items():
        m = mods[name]
        if w != layer_width(m):
            replace_module(model, name, _resized(m, w))
    object.__setattr__(model, WIDTHS_ATTR, dict(widths))
    return model
