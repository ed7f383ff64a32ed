"""Channel masks on a model: what :func:`pof.prune_channels` does before any channel goes.

:func:`mask_channels` masks the pruned columns of every consumer of a
:class:`~pof.core.channels.ChannelPlan` (a :class:`~pof.core.parametrizations.PruneMask`, reversible
with :func:`pof.unprune`) and, with ``recover="mean"``, adds each removed channel's mean
activation (from a few unlabeled batches) times its columns to the consumer's output as a
constant. :func:`fold_channel_recovery` moves that constant into the consumer's BatchNorm
or bias, the step before the channels are removed physically (:mod:`pof.structured`).
The plan is recorded on the model (``model.pof_channel_plan``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ..errors import PofError
from .channels import ChannelPlan
from .masks import check_choice, check_sparsity, check_whole
from .model_info import following_norms, model_device
from .parametrizations import RECOVER, PruneMask, refuse_pruned, register

PLAN_ATTR = "pof_channel_plan"


def channel_plan(model: nn.Module) -> ChannelPlan | None:
    """The plan of the channel masks on ``model``, or None."""
    plan = getattr(model, PLAN_ATTR, None)
    return plan if isinstance(plan, ChannelPlan) else None


def is_channel_pruned(model: nn.Module) -> bool:
    """True if ``model`` carries channel masks (see :func:`mask_channels`)."""
    return channel_plan(model) is not None


def _inputs(batches: Iterable, limit: int) -> Iterable[Tensor]:
    for i, b in enumerate(batches):
        if i >= limit:
            return
        yield b[0] if isinstance(b, list | tuple) else b


@torch.no_grad()
def input_means(model: nn.Module, names: list[str], batches: Iterable, limit: int
                ) -> dict[str, Tensor]:
    """Mean of each input channel of the named layers over ``limit`` of ``batches``
    (tensors or ``(x, y)`` pairs; eval mode, no labels used)."""
    mods = dict(model.named_modules())
    sums: dict[str, Tensor] = {}

    def hook(name):
        def fn(mod, args):
            x = args[0].detach().double()
            m = x.mean((0, 2, 3)) if x.dim() == 4 else x.flatten(0, -2).mean(0)
            sums[name] = sums.get(name, 0) + m
        return fn

    handles = [mods[n].register_forward_pre_hook(hook(n)) for n in names]
    was, count = model.training, 0
    model.eval()
    dev = model_device(model)
    try:
        for x in _inputs(batches, limit):
            model(x.to(dev))
            count += 1
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    if count == 0:
        raise PofError("mean recovery needs at least one batch of inputs")
    return {n: (s / count).float() for n, s in sums.items()}


def _add_recovery(mod: nn.Module, args, out: Tensor) -> Tensor:
    d = mod.channel_recovery
    return out + (d.view(1, -1, 1, 1) if out.dim() == 4 else d)


def mask_channels(
    model: nn.Module,
    plan: ChannelPlan,
    ratio: float,
    scores: list[Tensor] | None = None,
    recover: str = "zero",
    batches: Iterable | None = None,
    num_batches: int = 10,
    round_to: int = 1,
) -> nn.Module:
    """Mask the ``round(ratio * C)`` lowest-scoring channels of every group of ``plan``
    (the kept ones rounded to a multiple of ``round_to``, see :meth:`ChannelPlan.select`).

    ``scores`` (one tensor per group) default to the pof importance
    (:meth:`ChannelPlan.scores`). ``recover="mean"`` adds each removed channel's mean
    input to every consumer (over ``num_batches`` of ``batches``) back as a constant.
    In place and reversible (:func:`pof.unprune`); returns ``model``.
    """
    ratio = check_sparsity(ratio)
    check_choice("recover", recover, RECOVER)
    round_to = check_whole("round_to", round_to, 1)
    if recover == "mean" and batches is None:
        raise PofError("channel pruning with recover='mean' needs batches= (a few unlabeled "
                       "input batches to estimate each removed channel's mean)")
    refuse_pruned(model, "pof.remove or pof.unprune it first")
    mods = dict(model.named_modules())
    with torch.no_grad():
        weights = {n: mods[n].weight.detach().clone() for n in plan.consumers}
    plan.select(ratio, plan.scores(weights) if scores is None else scores, round_to)
    masks = plan.masks(weights)
    for name, mask in masks.items():
        register(mods[name], "weight", PruneMask(mask), unsafe=True)
    if recover == "mean":
        means = input_means(model, list(masks), batches, num_batches)
        for name, mask in masks.items():
            w = weights[name] * ~mask  # the removed columns, as trained
            d = (w.flatten(2).sum(2) if w.dim() == 4 else w) @ means[name].to(w)
            mods[name].register_buffer("channel_recovery", d)
            mods[name]._pof_channel_hook = mods[name].register_forward_hook(_add_recovery)
    object.__setattr__(model, PLAN_ATTR, plan)
    return model


def _take_recovery(m: nn.Module) -> Tensor | None:
    """Remove ``m``'s mean-recovery constant and hook; return the constant (or None)."""
    if not hasattr(m, "_pof_channel_hook"):
        return None
    m._pof_channel_hook.remove()
    del m._pof_channel_hook
    return m._buffers.pop("channel_recovery")


def clear_channels(model: nn.Module) -> None:
    """Forget the channel plan and mean constants (:func:`pof.unprune` removes the masks)."""
    for m in model.modules():
        _take_recovery(m)
    if hasattr(model, PLAN_ATTR):
        object.__delattr__(model, PLAN_ATTR)


def _recovery_targets(model: nn.Module) -> dict[str, tuple[str, nn.Module | None]]:
    """Where each consumer's mean-recovery constant goes: ``"batchnorm"`` (the next
    BatchNorm's running mean), ``"bias"`` (its own bias) or ``"new bias"`` (a bias added to
    a layer that had none), with the BatchNorm."""
    norms = following_norms(model)
    mods = dict(model.named_modules())
    out = {}
    for name, m in mods.items():
        if hasattr(m, "_pof_channel_hook"):
            bn = mods[norms[name]] if name in norms else None
            out[name] = (("batchnorm", bn) if bn is not None and bn.track_running_stats
                         else ("bias" if m.bias is not None else "new bias", None))
    return out


def recovery_summary(model: nn.Module) -> dict[str, int]:
    """How many consumers' mean-recovery constants :func:`fold_channel_recovery` will fold
    into a BatchNorm, an existing bias, or a new bias (a model without BatchNorm)."""
    kinds = [kind for kind, _ in _recovery_targets(model).values()]
    return {k: kinds.count(k) for k in ("batchnorm", "bias", "new bias")}


def fold_channel_recovery(model: nn.Module) -> None:
    """Move each consumer's mean-recovery constant into its BatchNorm or bias, in place."""
    mods = dict(model.named_modules())
    for name, (kind, bn) in _recovery_targets(model).items():
        m = mods[name]
        d = _take_recovery(m)
        with torch.no_grad():
            if kind == "batchnorm":
                bn.running_mean.sub_(d)  # bn(z + d) with mean m == bn(z) with mean m - d
            elif kind == "bias":
                m.bias.add_(d)
            else:
                m.bias = nn.Parameter(d.clone())
