"""One-shot magnitude pruning with zero or mean recovery, reversible until ``remove``.

``prune`` adds a :class:`~pof.core.parametrizations.PruneMask` parametrization to each
selected weight (after the sphere parametrization, if any), the way ``torch.nn.utils.prune``
keeps masks on the module; the q/k/v blocks of an attention ``in_proj_weight`` are pruned
as three layers. ``unprune`` takes the masks off again (channel masks too);
:func:`pof.remove` (in :mod:`pof.core.fold`) makes them permanent.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .channel_masks import clear_channels
from .masks import check_choice, check_pattern, check_sparsity, compute_masks
from .parametrizations import (
    MEAN_SCOPES,
    RECOVER,
    PruneMask,
    pruned_attrs,
    pruned_layers,
    refuse_pruned,
    register,
    remove_parametrization,
)
from .selection import Patterns, select_weights
from .targets import Target, from_units


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
    include: Patterns = None,
    exclude: Patterns = None,
    keep_first_conv: bool | None = None,
) -> nn.Module:
    """Magnitude-prune ``model`` in place at ``sparsity`` (a fraction in [0, 1)).

    ``scope="layer"`` prunes every selected weight (each q/k/v block of an attention) to
    ``sparsity``; ``"global"`` uses one threshold across them. ``pattern="N:M"`` keeps N
    of every M consecutive input-channel weights instead (``sparsity`` may then be None or
    must equal ``1 - N/M``). ``recover="mean"`` fills pruned entries with their mean (see
    :class:`PruneMask`). Weights: the selection recorded on the model by ``to_sphere`` or
    a penalty, unless ``include``/``exclude``/``keep_first_conv`` are given. Works on
    plain and sphere models; masks stay on the modules until :func:`pof.remove`
    (permanent) or :func:`unprune` (undo). Returns ``model``.
    """
    sparsity = check_sparsity(check_pattern(sparsity, pattern))
    check_choice("recover", recover, RECOVER)  # before the masks are computed
    check_choice("mean_scope", mean_scope, MEAN_SCOPES)
    targets = select_weights(model, include, exclude, keep_first_conv)
    refuse_pruned(model, "call pof.remove(model) to make that permanent, or "
                         "pof.unprune(model) to undo it, before pruning again")
    masks = target_masks(targets, sparsity, scope, pattern)
    for t, mask in zip(targets, masks, strict=True):
        register(t.module, t.attr, PruneMask(mask, recover, mean_scope, t.unit_dim, t.groups),
                 unsafe=True)  # shapes match by construction
    return model


def unprune(model: nn.Module) -> nn.Module:
    """Take the prune masks off again, restoring the weights as they were before (channel
    masks and their mean constants too)."""
    clear_channels(model)
    for _, m in pruned_layers(model):
        for attr in pruned_attrs(m):
            plist = m.parametrizations[attr]
            if len(plist) == 1:
                remove_parametrization(m, attr, leave_parametrized=False)
            else:
                del plist[next(i for i, p in enumerate(plist) if isinstance(p, PruneMask))]
    return model
