"""Learning-rate schedules as ``torch.optim.lr_scheduler.LambdaLR`` factors, per step.

``cosine``: linear warm-up over ``warmup_epochs``, then cosine decay to 0. ``constant``:
warm-up, then flat. ``onecycle``: rise from 4% to the peak over ``warmup_epochs`` (30% of
the run if 0), then cosine decay to 0.
"""

from __future__ import annotations

import math

import torch

from .config import TrainConfig


def lr_factor(cfg: TrainConfig, step: int, total: int, steps_per_epoch: int) -> float:
    """The learning rate at ``step`` of ``total`` as a fraction of ``cfg.lr``."""
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "onecycle":
        peak = warm if warm > 0 else max(1, int(0.3 * total))
        if step < peak:
            return 0.04 + 0.96 * step / peak
        return 0.5 * (1 + math.cos(math.pi * (step - peak) / max(1, total - peak)))
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "constant":
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def lr_at(cfg: TrainConfig, step: int, total: int, steps_per_epoch: int) -> float:
    """Learning rate at ``step`` of ``total``."""
    return cfg.lr * lr_factor(cfg, step, total, steps_per_epoch)


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, total: int,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` for ``cfg.schedule``; call ``step()`` after each batch."""
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(cfg, step, total, steps_per_epoch))
