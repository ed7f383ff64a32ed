"""The pof penalty for training loops pof does not own: sphere, warm-up, prune at the end."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..core.masks import check_choice
from ..core.penalty import PrunePenalty
from ..core.prune import RECOVER, prune
from ..core.selection import Patterns
from ..core.sphere import sphere_layers, to_sphere
from ..errors import PofError


class ScheduledPenalty:
    """A :class:`pof.PrunePenalty` whose weight ramps up linearly over ``warmup_steps``.

    On construction the model's selected weights go on the unit sphere (``sphere=True``,
    unless it already has sphere layers); the selection (``include``/``exclude``) is
    recorded on the model, so the final prune uses the same weights. ``penalty(step)``
    is the term to add to the loss at optimizer step ``step``; ``finish(model)`` prunes
    at ``sparsity`` with ``prune`` recovery ("zero" or "mean"; None: do not prune). Other
    keyword arguments (``scope``, ``beta``, ``refresh_every``, ...) go to
    :class:`pof.PrunePenalty`, which also picks ``weight`` and ``form`` when they are None.
    """

    def __init__(
        self,
        model: nn.Module,
        sparsity: float,
        weight: float | None = None,
        warmup_steps: int = 0,
        form: str | None = None,
        prune: str | None = None,
        sphere: bool = True,
        include: Patterns = None,
        exclude: Patterns = None,
        **penalty_kwargs: Any,
    ) -> None:
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or (
                warmup_steps < 0):
            raise PofError(f"warmup_steps must be a whole number >= 0, got {warmup_steps!r}")
        if prune is not None:
            check_choice("prune", prune, RECOVER)
        if sphere and not sphere_layers(model):
            to_sphere(model, include=include, exclude=exclude)
        self.penalty = PrunePenalty(model, sparsity, weight=weight, form=form,
                                    include=include, exclude=exclude, **penalty_kwargs)
        self.warmup_steps, self.prune = warmup_steps, prune
        self.last: float = 0.0  # the last value returned, for logging

    def scale(self, step: int) -> float:
        """Warm-up factor in [0, 1] at optimizer step ``step``."""
        return 1.0 if self.warmup_steps <= 0 else min(1.0, step / self.warmup_steps)

    def __call__(self, step: int) -> Tensor:
        value = self.penalty() * self.scale(step)
        self.last = float(value.detach())
        return value

    def pruned_energy(self) -> float:
        """What pruning at the target would remove now (see docs/method.md)."""
        return float(self.penalty.pruned_energy().detach())

    def finish(self, model: nn.Module) -> None:
        """Prune ``model`` at the target sparsity (the recorded selection) if ``prune`` was
        given."""
        if self.prune is not None:
            prune(model, self.penalty.sparsity, scope=self.penalty.scope, recover=self.prune)
