"""Train the network narrowed to a sampled width: the channel version of :mod:`pof.core.subnet`.

:class:`ChannelSubnetSampler` runs the model with the lowest-scoring ``s`` fraction of every
channel group of a :class:`~pof.core.channels.ChannelPlan` gone, as
``pof.prune_channels(model, s)`` removes them: a forward pre-hook on each consumer replaces
the removed channels of its input by zero or by their batch mean (the mean recovery of the
deploy step, a constant: detached). The score is the pof importance
(:meth:`ChannelPlan.scores`, the consumer-column energy the channel penalty shrinks), so the
channels are ordered by importance within each group and every width removes a prefix of
that order: the widths are nested, and removing the last k% of any group is the deploy step.

No straight-through here (unlike the weight sampler): a removed channel's producer gets no
gradient from the narrow pass, as in slimmable networks; the narrow network learns to do
without it while the penalty empties its columns. BatchNorm running statistics keep tracking
the full width (re-estimate them per width at deploy time: ``pof prune --bn-recal N``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..errors import PofError
from .channels import ChannelPlan
from .masks import check_choice, check_range, keep_all_but_lowest
from .parametrizations import RECOVER
from .subnet import SAMPLES, SubnetSampler, bn_stats_frozen


class ChannelSubnetSampler(SubnetSampler):
    """Forward passes of ``model`` with ``s`` of every channel group removed.

    The draws (``sample``, ``samples``; ``how``: sandwich, uniform, high) are
    :class:`~pof.core.subnet.SubnetSampler`'s; :meth:`pruned` narrows the model instead of
    pruning single weights. ``recover``: the removed channels read as "zero" or as their
    batch "mean" (per channel, over batch and positions; no gradient through it).
    """

    def __init__(self, model: nn.Module, plan: ChannelPlan,
                 sparsity: tuple[float, float] | float | str, recover: str = "mean",
                 seed: int = 0, how: str = "sandwich") -> None:
        rng = check_range(sparsity)
        self.lo, self.hi = rng if isinstance(rng, tuple) else (rng, rng)
        check_choice("recover", recover, RECOVER)
        check_choice("sample", how, SAMPLES)
        self.recover, self.seed, self.model, self.how, self.plan = recover, seed, model, how, plan
        for g in plan.groups:
            if round(self.hi * g.channels) >= g.channels:
                raise PofError(f"sparsity {self.hi:g} would remove all {g.channels} channels "
                               f"of layer {g.root!r} (and its group); lower it or exclude it")
        mods = dict(model.named_modules())
        self.consumers = {n: mods[n] for n in plan.consumers}

    def keep_masks(self, sparsity: float) -> dict[str, Tensor]:
        """Per consumer, a keep-mask over its input features (channels, or a Linear's
        inputs) at ``sparsity``: what ``pof.prune_channels`` would keep."""
        with torch.no_grad():
            weights = {n: m.weight for n, m in self.consumers.items()}
            scores = self.plan.scores(weights)
        out = {n: torch.ones(w.shape[1], dtype=torch.bool) for n, w in weights.items()}
        for g, s in zip(self.plan.groups, scores, strict=True):
            gone = ~keep_all_but_lowest(s.float(), round(sparsity * g.channels))
            for name, pairs in g.consumers.items():
                li, ri = zip(*pairs, strict=True)
                out[name][list(li)] &= ~gone[list(ri)]
        return out

    @contextmanager
    def pruned(self, sparsity: float) -> Iterator[None]:
        """Every forward pass of the model inside runs at width ``1 - sparsity``,
        BatchNorm running statistics left alone."""
        masks = self.keep_masks(sparsity)
        hooks = [m.register_forward_pre_hook(_narrowing(masks[n], self.recover))
                 for n, m in self.consumers.items() if not bool(masks[n].all())]
        try:
            with bn_stats_frozen(self.model):
                yield
        finally:
            for h in hooks:
                h.remove()


def _narrowing(keep: Tensor, recover: str):
    """A forward pre-hook: the input's removed features (dim 1 of a conv's input, the last
    of a Linear's) as zero or their mean over every other dimension."""
    def hook(mod: nn.Module, args: tuple) -> tuple:
        x, rest = args[0], args[1:]
        dim = x.dim() - 1 if isinstance(mod, nn.Linear) else 1
        shape = [1] * x.dim()
        shape[dim] = -1
        k = keep.to(x.device).view(shape)
        if recover == "mean":
            fill = x.detach().mean([d for d in range(x.dim()) if d != dim], keepdim=True)
            x = torch.where(k, x, fill)
        else:
            x = x * k.to(x.dtype)
        return (x, *rest)
    return hook
