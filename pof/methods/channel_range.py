"""One training for every width in a range: :class:`OnTheFly` on whole channels."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..core.channels import ChannelPlan
from ..core.selection import Patterns
from ..core.sphere import sphere_layers, to_sphere
from .on_the_fly import OnTheFly


class ChannelRange(OnTheFly):
    """pof for a range of channel fractions: one model, its width picked at deploy time.

    Within every channel group (:func:`pof.channel_groups`) the channels are ordered by
    importance (the consumer-column energy, :meth:`~pof.core.channels.ChannelPlan.scores`);
    training makes removing the lowest ``s`` of each group harmless for every ``s`` in
    ``sparsity``: nested channel-penalty levels, plus each step half the batch through the
    network narrowed to a sampled width (sandwich rule) learning, with ``distill``, the full
    width's own outputs (:class:`~pof.core.channel_subnet.ChannelSubnetSampler`).

    Args:
        model: a model Torch-Pruning can trace (its weights go on the unit sphere first).
        sparsity: the range of channel fractions removed, ``(lo, hi)`` or ``"lo:hi"``
            (``0:0.5``: any width from full to half).
        plan: the channel groups; None traces them on ``example_inputs`` (default: one
            32x32 input) with ``exclude`` (layers whose outputs stay whole).
        other arguments: as :class:`pof.OnTheFly` (``distill`` 0 by default, as there:
            distillation measured no better on the weight-level range, ResNet-20, and worse
            on digits channels from scratch, 76.39 against 90.00 at full width).

    Deploy at any ``s`` in the range: ``pof.prune_channels(model, s, recover="mean", ...)``,
    ``pof.recalibrate_bn(model, batches)`` (statistics per width), ``pof.remove_channels``.
    """

    name = "pof-channel-range"

    def __init__(self, model: nn.Module, sparsity: Any = (0.0, 0.5),
                 plan: ChannelPlan | None = None, example_inputs: Tensor | None = None,
                 distill: float = 0.0, exclude: Patterns = None, sphere: bool = True,
                 **kwargs: Any) -> None:
        if sphere and not sphere_layers(model):
            to_sphere(model, exclude=exclude)
        if plan is None:
            from ..structured import channel_groups

            plan = channel_groups(model, example_inputs, exclude)
        self.plan = plan
        super().__init__(model, sparsity, distill=distill, sphere=False, channels=plan,
                         **kwargs)
