"""Gradual magnitude pruning as a training method (the baseline pof is measured against)."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..core.gmp import GradualPruner
from ..core.selection import Patterns
from .base import Method


class GMP(Method):
    """Gradual magnitude pruning (Zhu & Gupta): masks on the cubic schedule, zero fill.

    The masks (``pof.prune``'s parametrizations) are registered on the model here, so build
    the optimizer after this; they are updated in :meth:`after_step`, from ``start`` to
    ``end`` (fractions of ``total_steps``) every ``every`` steps, and stay fixed after.
    The trained model is a pruned model: ``pof.remove(model)`` makes it permanent.
    """

    name = "gmp"

    def __init__(self, model: nn.Module, sparsity: float, total_steps: int,
                 start: float = 0.0, end: float = 0.75, every: int = 100,
                 scope: str = "layer", include: Patterns = None,
                 exclude: Patterns = None) -> None:
        super().__init__(model)
        self.pruner = GradualPruner(model, sparsity, total_steps, start, end, every, scope,
                                    include, exclude)
        self.sparsity = self.pruner.sparsity

    def after_step(self) -> None:
        super().after_step()
        self.pruner.update(self.steps)

    def logs(self) -> dict[str, Any]:
        return {"gmp_sparsity": self.pruner.target(self.steps)}
