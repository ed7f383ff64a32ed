"""One training for every sparsity in a range (:class:`OnTheFly`), and the CrAM-style
comparator that shares its pruned-subnetwork machinery (:class:`CramStyle`).

Each step trains the dense network and the network pruned at sampled sparsities
(straight-through: the gradient at the pruned point reaches every weight). With
``split=True`` the batch is halved: one half through the dense network, the other through
the pruned ones (the cost of one pass); with ``distill`` > 0 the pruned passes learn the
dense network's own outputs on their images (in-place distillation: one extra forward
pass without a backward, on half the batch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..core.channel_subnet import ChannelSubnetSampler
from ..core.masks import check_range, check_whole
from ..core.parametrizations import plain_copy
from ..core.selection import Patterns
from ..core.subnet import SubnetSampler, bn_stats_frozen
from ..errors import PofError
from .base import batch_size, logits_of, sliced
from .penalized import OneTarget

Run = Callable[[Any, nn.Module], tuple[Any, Tensor]]  # (batch, model) -> (outputs, loss)


def kl_to_teacher(logits: Tensor, teacher: Tensor) -> Tensor:
    """KL divergence from the (detached) teacher's softmax to the student's, per example."""
    return F.kl_div(F.log_softmax(logits.float(), -1),
                    F.log_softmax(teacher.detach().float(), -1),
                    reduction="batchmean", log_target=True)


class OnTheFly(OneTarget):
    """pof for every sparsity in a range: one model, the sparsity picked at deploy time.

    Args:
        model: any module (its selected weights go on the unit sphere, as
            :class:`pof.OneTarget`).
        sparsity: the range ``(lo, hi)`` (or ``"lo:hi"``; one number trains one target).
        weight, form, levels: the nested penalty's (None: the measured defaults; weight 0:
            the subnetwork loss alone).
        distill: weight of in-place distillation in the pruned passes' loss: their target is
            the dense network's own (detached) softmax on the same examples, the rest of the
            weight on the labels (0: labels only; 1: the dense outputs only).
        subnets: pruned subnetworks per step, each on its share of the pruned examples.
        sample: how sparsities are drawn — "sandwich" (the top of the range every step
            with ``subnets`` > 1, every other step with 1; the rest uniform), "uniform", or
            "high" (density rising toward the top of the range).
        every: take the subnetwork term on every this many steps (plain steps between).
        split: half the batch dense, half pruned (True), or the whole batch through both
            (False: twice the cost, as CrAM does).
        recover: the pruned passes' fill, "mean" (pof's deploy step) or "zero".
        teacher: a frozen model whose outputs the pruned passes distil instead of the dense
            network's own (e.g. the converged model training starts from); it runs in eval
            mode without gradients (a parametrized one as a plain copy, see ``plain_copy``).
        seed: the sparsity draws are a function of ``(seed, step)``: every DDP rank draws
            the same.
        warmup_steps, include, exclude, sphere and other keyword arguments: as
            :class:`pof.OneTarget`; ``channels=`` (a channel plan) trains whole channels:
            the channel penalty and narrowed subnetworks (see :class:`pof.ChannelRange`).

    Deploy: ``pof.prune(model, s, recover="mean")`` for any ``s`` in the range, then
    ``pof.recalibrate_bn`` (BatchNorm statistics track the dense network during training).
    """

    name = "pof-range"

    def __init__(self, model: nn.Module, sparsity: Any = (0.3, 0.9),
                 weight: float | None = None, form: str | None = None, levels: int = 4,
                 distill: float = 0.0, subnets: int = 1, sample: str = "sandwich",
                 every: int = 1, split: bool = True, recover: str = "mean", seed: int = 0,
                 warmup_steps: float = 0, sphere: bool = True, include: Patterns = None,
                 exclude: Patterns = None, teacher: nn.Module | None = None,
                 **penalty_kwargs: Any) -> None:
        check_whole("subnets", subnets, 1)
        check_whole("every", every, 1)
        if isinstance(distill, bool) or not isinstance(distill, int | float) or not (
                0 <= distill <= 1):
            raise PofError(f"distill must be a number in [0, 1], got {distill!r}")
        rng = check_range(sparsity)
        if isinstance(rng, tuple):
            penalty_kwargs["levels"] = levels
        super().__init__(model, rng, weight, form, warmup_steps, 0, sphere, include, exclude,
                         **penalty_kwargs)
        plan = penalty_kwargs.get("channels")
        self.sampler = (SubnetSampler(model, rng, recover, seed, include, exclude, how=sample)
                        if plan is None else
                        ChannelSubnetSampler(model, plan, rng, recover, seed, how=sample))
        self.distill, self.subnets, self.every, self.split = float(distill), subnets, every, split
        self.teacher = teacher
        if teacher is not None:  # a parametrized teacher would read the student's weights
            if any(parametrize.is_parametrized(m) for m in teacher.modules()):
                self.teacher = plain_copy(teacher)  # (see plain_copy)
            self.teacher.eval().requires_grad_(False)

    def step_loss(self, run: Run, batch: Any, model: nn.Module | None = None,
                  reg_scale: float = 1.0) -> tuple[Any, Tensor]:
        """The dense and pruned passes of one step (see :meth:`Method.step_loss`)."""
        net = model or self.model
        if self.steps % self.every:
            return super().step_loss(run, batch, net, reg_scale)
        ss = self.sampler.samples(self.steps // self.every, self.subnets)
        n = batch_size(batch)
        if self.split:
            h = n // 2
            dense, dense_loss = run(sliced(batch, 0, h), net)
            teacher = self._teacher(run, sliced(batch, h, n)) if self.distill else None
            outs, loss = self._pruned(run, batch, h, n, ss, teacher)
            loss = (h * dense_loss + (n - h) * loss) / n
            return _joined([dense, *outs]), self.with_regularizer(loss, reg_scale)
        dense, loss = run(batch, net)  # the whole batch dense, then pruned (CrAM+)
        teacher = None
        if self.distill:
            teacher = (logits_of(dense).detach() if self.teacher is None
                       else self._teacher(run, batch))
        outs, pruned_loss = self._pruned(run, batch, 0, n, ss, teacher)
        return dense, self.with_regularizer(loss + pruned_loss, reg_scale)

    def _teacher(self, run: Run, batch: Any) -> Tensor:
        """The teacher's logits on ``batch`` (the dense network's own, or the frozen
        teacher's): no gradient, BatchNorm statistics kept."""
        if self.teacher is not None:
            with torch.no_grad():
                return logits_of(run(batch, self.teacher)[0]).detach()
        with torch.no_grad(), bn_stats_frozen(self.model):
            return logits_of(run(batch, self.model)[0]).detach()

    def _pruned(self, run: Run, batch: Any, start: int, stop: int, ss: list[float],
                teacher: Tensor | None) -> tuple[list[Any], Tensor]:
        """Examples ``start:stop`` through the pruned networks, one share per sparsity:
        their outputs and their mean loss."""
        n, outs, total = stop - start, [], 0.0
        bounds = [start + n * k // len(ss) for k in range(len(ss) + 1)]
        for s, a, b in zip(ss, bounds, bounds[1:], strict=False):
            if b <= a:
                continue
            with self.sampler.pruned(s):
                out, loss = run(sliced(batch, a, b), self.model)
            if teacher is not None:
                kl = kl_to_teacher(logits_of(out), teacher[a - start:b - start])
                loss = kl if self.distill == 1 else (1 - self.distill) * loss + self.distill * kl
            outs.append(out)
            total = total + (b - a) * loss
        return outs, total / n

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "seed": self.sampler.seed}


class CramStyle(OnTheFly):
    """The CrAM-style comparator: plain weights, no penalty; each step the whole batch
    dense and pruned at a sampled sparsity (zero fill), twice the cost of a plain step."""

    name = "cram"

    def __init__(self, model: nn.Module, sparsity: Any = (0.3, 0.9), subnets: int = 1,
                 sample: str = "sandwich", every: int = 1, distill: float = 0.0, seed: int = 0,
                 include: Patterns = None, exclude: Patterns = None) -> None:
        super().__init__(model, sparsity, weight=0, distill=distill, subnets=subnets,
                         sample=sample, every=every, split=False, recover="zero", seed=seed,
                         sphere=False, include=include, exclude=exclude)


def _joined(outs: list[Any]) -> Any:
    """The outputs of a split step in batch order: one tensor when they are tensors."""
    if all(isinstance(o, Tensor) for o in outs):
        return torch.cat(outs)
    return outs[0]  # e.g. Hugging Face outputs: the dense half's
