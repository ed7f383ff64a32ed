"""Gradual magnitude pruning (Zhu & Gupta, 2017): the conventional baseline pof is measured
against.

The sparsity grows along a cubic schedule from 0 at ``start`` to ``sparsity`` at ``end``
(both fractions of training); every ``every`` steps in between, the masks are recomputed
from the magnitudes of the (already masked) weights, so a pruned weight stays pruned.
After ``end`` the masks are fixed. The masks are ordinary :class:`pof.prune.PruneMask`
parametrizations with zero fill, registered (all-ones) when the pruner is created, so a
checkpoint saved at any point — and the final model — is a pruned model that
``pof eval``, ``finetune``, ``export`` and ``sweep`` read like the output of ``pof prune``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import PofError
from .masks import check_sparsity
from .parametrizations import mask_param, pruned_layers
from .prune import prune, target_masks
from .schedules import cubic_sparsity
from .selection import Patterns, select_weights

__all__ = ["GradualPruner", "check_schedule", "cubic_sparsity"]


def check_schedule(start: float, end: float, every: int) -> None:
    """Raise :class:`PofError` unless ``0 <= start < end <= 1`` and ``every >= 1``."""
    if not 0.0 <= start < end <= 1.0:
        raise PofError(f"GMP needs 0 <= start < end <= 1 (fractions of training), "
                       f"got start={start:g}, end={end:g}")
    if every < 1:
        raise PofError(f"GMP update interval must be >= 1 step, got {every}")


class GradualPruner:
    """Masks that follow the cubic schedule; call :meth:`update` once per training step.

    Args:
        model: the model to prune (plain weights; the same weights as ``pof.prune``,
            attention q/k/v blocks each to the target).
        sparsity: final sparsity in [0, 1).
        total_steps: training length in steps.
        start, end: fractions of training where pruning starts and reaches ``sparsity``.
        every: recompute the masks every this many steps (and at ``end``).
        scope: "layer" or "global".
    """

    def __init__(
        self,
        model: nn.Module,
        sparsity: float,
        total_steps: int,
        start: float = 0.0,
        end: float = 0.75,
        every: int = 100,
        scope: str = "layer",
        include: Patterns = None,
        exclude: Patterns = None,
        keep_first_conv: bool | None = None,
    ) -> None:
        self.sparsity = check_sparsity(sparsity)
        check_schedule(start, end, every)
        self.total, self.start, self.end, self.every = total_steps, start, end, every
        self.scope = scope
        if not pruned_layers(model):  # resumed runs already carry their masks
            prune(model, 0.0, scope=scope, include=include, exclude=exclude,
                  keep_first_conv=keep_first_conv)
        self.targets = [t for t in select_weights(model, include, exclude, keep_first_conv)
                        if mask_param(t.module, t.attr) is not None]
        self.layers = [(t.name, t.module) for t in self.targets]

    def target(self, step: int) -> float:
        """The sparsity the schedule asks for at ``step``."""
        return cubic_sparsity(step, self.total, self.sparsity, self.start, self.end)

    @torch.no_grad()
    def update(self, step: int) -> bool:
        """Recompute the masks if ``step`` is an update step; True if they changed."""
        t0, t1 = round(self.start * self.total), round(self.end * self.total)
        if step < t0 or step > t1 or ((step - t0) % self.every and step != t1):
            return False
        # from the masked weights (pruned ones are 0); q/k/v blocks prune separately
        masks = target_masks(self.targets, self.target(step), self.scope)
        for t, mask in zip(self.targets, masks, strict=True):
            mask_param(t.module, t.attr).mask.copy_(mask)
        return True
