"""Prune whole channels: mask them (reversible), then remove them physically."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..core.channel_masks import (
    channel_plan,
    clear_channels,
    fold_channel_recovery,
    mask_channels,
)
from ..core.masks import check_choice
from ..core.model_info import model_device
from ..core.parametrizations import own_class
from ..core.selection import Patterns
from ..core.sphere import is_cosine
from ..core.widths import record_widths
from ..errors import PofError
from .graph import build_graph, channel_groups, magnitude_scores

IMPORTANCE = ("pof", "magnitude")


def prune_channels(
    model: nn.Module,
    ratio: float,
    example_inputs: Tensor | None = None,
    recover: str = "zero",
    batches: Iterable | None = None,
    num_batches: int = 10,
    importance: str = "pof",
    exclude: Patterns = None,
    round_to: int = 1,
) -> nn.Module:
    """Mask ``round(ratio * C)`` channels of every channel group, in place (reversible);
    ``round_to`` > 1 keeps a multiple of it in every group (e.g. 8: faster on CPUs).

    ``importance="pof"`` drops the channels whose consumer columns hold the least weight
    energy (what the channel penalty pushes to zero); ``"magnitude"`` uses Torch-Pruning's
    ``GroupMagnitudeImportance`` (the conventional baseline). ``recover="mean"`` adds each
    removed channel's mean activation over ``num_batches`` of ``batches`` (tensors or
    ``(x, y)`` pairs; no labels used) back as a constant. Groups come from
    :func:`channel_groups` (``example_inputs``, ``exclude``). :func:`remove_channels` then
    removes the channels physically; :func:`pof.unprune` undoes the masks. Returns ``model``.
    """
    check_choice("importance", importance, IMPORTANCE)
    plan = channel_groups(model, example_inputs, exclude)
    scores = magnitude_scores(plan) if importance == "magnitude" else None
    return mask_channels(model, plan, ratio, scores, recover, batches, num_batches, round_to)


def _bake(model: nn.Module) -> None:
    """Make every parametrized weight a plain one (sphere and masks included)."""
    for name, m in model.named_modules():
        if is_cosine(m):
            raise PofError(f"layer {name!r} is a cosine layer; its channels cannot be removed "
                           "(a plain layer cannot reproduce it)")
    for m in list(model.modules()):
        if parametrize.is_parametrized(m):
            for p in list(m.parametrizations):
                parametrize.remove_parametrizations(own_class(m), p, leave_parametrized=True)


def remove_channels(model: nn.Module, check: bool = True) -> nn.Module:
    """Remove the masked channels physically (Torch-Pruning), in place: a smaller dense model.

    Sphere weights are baked first and mean constants folded into the next BatchNorm or
    bias; the new widths are recorded for checkpoints. ``check=True`` compares the outputs
    on the traced example input before and after, and raises if they differ (a
    mis-grouped model).
    """
    plan = channel_plan(model)
    if plan is None:
        raise PofError("model has no channel masks (see pof.prune_channels)")
    x = plan.example_inputs.to(model_device(model))
    was = model.training
    model.eval()
    with torch.no_grad():
        before = model(x) if check else None
    _bake(model)
    fold_channel_recovery(model)
    mods = dict(model.named_modules())
    dg = build_graph(model, plan.example_inputs)
    for g in plan.groups:
        if g.pruned:
            root = mods[g.root]
            fn = dg.get_pruner_of_module(root).prune_out_channels
            dg.get_pruning_group(root, fn, g.pruned).prune()
    clear_channels(model)  # the masks went with the baking, the constants with the fold
    record_widths(model)
    if check:
        with torch.no_grad():
            after = model(x)
        err = (after - before).abs().max().item()
        if err > 1e-4 * max(1.0, before.abs().max().item()):
            raise PofError(f"removing channels changed the outputs by {err:.3g}: "
                           "Torch-Pruning mis-grouped this model; prune it unstructured")
    model.train(was)
    return model
