"""The schedules training methods follow, as pure formulas of the step: GMP's cubic
sparsity ramp (also the pof penalty's target ramp) and the linear warm-up of a penalty."""

from __future__ import annotations


def cubic_sparsity(step: int, total: int, sparsity: float, start: float, end: float) -> float:
    """Zhu & Gupta's schedule: ``sparsity * (1 - (1 - p)^3)``, ``p`` the progress from
    ``start`` to ``end`` (fractions of ``total`` steps), clamped to [0, 1]."""
    t0, t1 = start * total, end * total
    p = 1.0 if step >= t1 else max(0.0, (step - t0) / max(t1 - t0, 1e-9))
    return sparsity * (1 - (1 - p) ** 3)


def linear_warmup(step: int, warmup_steps: float) -> float:
    """A weight's factor at ``step``: rising linearly from 0 to 1 over ``warmup_steps``
    (1 throughout when ``warmup_steps`` <= 0)."""
    return 1.0 if warmup_steps <= 0 else min(1.0, step / warmup_steps)
