"""Methods that add a penalty to the task loss: pof for one target, and plain L1."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from ..core.masks import check_range
from ..core.penalty import L1Penalty, PrunePenalty, default_form_weight
from ..core.schedules import cubic_sparsity, linear_warmup
from ..core.selection import Patterns
from ..core.sphere import sphere_layers, to_sphere
from ..errors import PofError
from .base import Method


class L1(Method):
    """Plain L1 regularisation of the selected weights (the conventional baseline)."""

    name = "l1"

    def __init__(self, model: nn.Module, weight: float = 1e-5, include: Patterns = None,
                 exclude: Patterns = None) -> None:
        super().__init__(model)
        self.penalty = L1Penalty(model, weight, include, exclude)

    def regularizer(self) -> Tensor:
        return self.penalty()


class OneTarget(Method):
    """pof for one target sparsity: weights on the unit sphere and the pruning penalty.

    Args:
        model: any module; its selected weights go on the unit sphere (``sphere=True``,
            unless it already has sphere layers) before you build the optimizer.
        sparsity: the target in [0, 1) (a range ``(lo, hi)``: use :class:`pof.OnTheFly`).
        weight, form: the penalty's (None: the measured defaults for ``sparsity``); weight
            0 trains on the sphere without the penalty.
        warmup_steps: the penalty's weight rises linearly from 0 over this many steps.
        ramp_steps: the penalty's target rises from 0 along GMP's cubic schedule over this
            many steps (0: the target from the start).
        include, exclude: which weights (as ``pof.prune``); other keyword arguments go to
            :class:`pof.PrunePenalty` (``scope``, ``beta``, ``refresh_every``, ``pattern``,
            ``channels``, ...).
    """

    name = "pof"

    def __init__(self, model: nn.Module, sparsity: Any, weight: float | None = None,
                 form: str | None = None, warmup_steps: float = 0, ramp_steps: float = 0,
                 sphere: bool = True, include: Patterns = None, exclude: Patterns = None,
                 **penalty_kwargs: Any) -> None:
        super().__init__(model)
        for name, v in (("warmup_steps", warmup_steps), ("ramp_steps", ramp_steps)):
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise PofError(f"{name} must be a number >= 0, got {v!r}")
        if sphere and not sphere_layers(model):
            to_sphere(model, include=include, exclude=exclude)
        self.penalty: PrunePenalty | None = None
        if weight != 0:  # weight 0: the sphere (and a subclass's terms) without a penalty
            self.penalty = PrunePenalty(model, sparsity, weight=weight, form=form,
                                        include=include, exclude=exclude, **penalty_kwargs)
            self.sparsity = self.penalty.sparsity
        else:
            self.sparsity = check_range(sparsity)
        if ramp_steps and (isinstance(self.sparsity, tuple) or self.penalty is None
                           or self.penalty.pattern is not None
                           or self.penalty.channels is not None):
            raise PofError("ramp_steps moves a single weight-level target: one sparsity, a "
                           "penalty weight > 0, no pattern or channels")
        self.weight = 0.0 if self.penalty is None else self.penalty.weight
        self.form = default_form_weight(self.sparsity)[0] if self.penalty is None \
            else self.penalty.form
        self.warmup_steps, self.ramp_steps = warmup_steps, ramp_steps

    def scale(self) -> float:
        """The penalty's warm-up factor now."""
        return linear_warmup(self.steps, self.warmup_steps)

    def regularizer(self) -> Tensor | None:
        if self.penalty is None:
            return None
        if self.ramp_steps:
            self.penalty.set_target(cubic_sparsity(self.steps, self.ramp_steps,
                                                   self.sparsity, 0.0, 1.0))
        return self.penalty() * self.scale()

    def logs(self) -> dict[str, Any]:
        if self.penalty is None:
            return {}
        out: dict[str, Any] = {"pruned_energy": self.penalty.pruned_energy().item()}
        if len(self.penalty.levels) > 1:
            out["level_energy"] = self.penalty.level_energies()
        return out

    def to(self, device: Any) -> OneTarget:
        if self.penalty is not None:
            self.penalty.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.penalty is not None:
            state["penalty_calls"] = self.penalty.calls
            state.update({f"penalty.{k}": v for k, v in self.penalty.state_dict().items()})
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if self.penalty is None:
            return
        masks = [state[f"penalty.mask_{i}"] for i in range(len(self.penalty.names))
                 if f"penalty.mask_{i}" in state]
        if masks:
            self.penalty.load_masks(masks)
        self.penalty.calls = int(state.get("penalty_calls", 0))
