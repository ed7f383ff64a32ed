"""The training method a :class:`TrainConfig` asks for, built on the run's model: the one
place that maps config values to :mod:`pof.methods` objects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..methods import GMP, L1, Method, OneTarget, OnTheFly
from .config import TrainConfig


def method_for(cfg: TrainConfig, model: nn.Module, total_steps: int, steps_per_epoch: int,
               channel_plan: Callable[[], Any], teacher: nn.Module | None = None) -> Method:
    """The method of ``cfg`` on ``model`` (already on the sphere if the run asks for it);
    ``channel_plan()`` traces the channel groups when ``structure`` is channel; ``teacher``
    is the frozen model the pruned passes distil when ``subnet_teacher`` is init."""
    pof = cfg.penalty == "pof"
    shape = {"pattern": cfg.pattern,
             "channels": channel_plan() if cfg.structure == "channel" else None}
    if cfg.subnet_mode != "none":  # a pof range, cram, or a subnet term asked for
        return OnTheFly(model, cfg.sparsity, weight=cfg.penalty_weight if pof else 0,
                        form=cfg.penalty_form, levels=cfg.penalty_levels,
                        distill=cfg.subnet_distill, subnets=cfg.subnet_count,
                        sample=cfg.subnet_sample, every=cfg.subnet_every,
                        split=cfg.subnet_mode == "split", recover="mean" if pof else "zero",
                        seed=cfg.seed, warmup_steps=cfg.penalty_warmup * steps_per_epoch,
                        sphere=False, teacher=teacher,
                        **({**_penalty_options(cfg), **shape} if pof else {}))
    if pof:
        return OneTarget(model, cfg.sparsity, cfg.penalty_weight, cfg.penalty_form,
                         warmup_steps=cfg.penalty_warmup * steps_per_epoch,
                         ramp_steps=cfg.penalty_ramp * total_steps, sphere=False,
                         levels=cfg.penalty_levels, **shape, **_penalty_options(cfg))
    if cfg.penalty == "gmp":
        return GMP(model, cfg.sparsity, total_steps, cfg.gmp_start, cfg.gmp_end,
                   cfg.gmp_every, cfg.penalty_scope)
    if cfg.penalty == "l1":
        return L1(model, cfg.l1_weight)
    return Method(model)


def _penalty_options(cfg: TrainConfig) -> dict[str, Any]:
    return {"scope": cfg.penalty_scope, "beta": cfg.penalty_beta,
            "refresh_every": cfg.penalty_refresh}
