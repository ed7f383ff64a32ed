"""Train the network pruned at a sampled sparsity: the loss term behind "one model, any sparsity".

:class:`SubnetSampler` runs the model with its selected layers magnitude-pruned at a
sparsity ``s`` (layer-wise, as ``pof.prune`` would, zero or mean fill); the gradient passes
straight through to all weights — the gradient at the pruned point applied to the dense
weights, as CrAM does. BatchNorm running statistics keep tracking the dense network
(re-estimate them at deploy time with :func:`pof.recalibrate_bn`).

Two uses, both in :class:`pof.OnTheFly` (:mod:`pof.methods.on_the_fly`):
- ``subnet="split"`` (pof range): each batch is split in two halves, one through the dense
  network and one through the network pruned at a sampled sparsity — the same compute as a
  plain step;
- ``subnet="extra"`` (CrAM-style comparator): the whole batch through both, twice the cost.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .bn_recal import batchnorms
from .masks import check_choice, check_range, keep_all_but_lowest
from .parametrizations import RECOVER
from .selection import Patterns, select_weights
from .targets import Target, from_units

SAMPLES = ("sandwich", "uniform", "high")


def straight_through_prune(w: Tensor, sparsity: float, recover: str = "zero") -> Tensor:
    """``w`` magnitude-pruned at ``sparsity`` (exact count) in the forward pass, with the
    identity as its gradient: the gradient at the pruned point reaches every weight."""
    a = w.detach().abs().flatten()
    keep = keep_all_but_lowest(a, round(sparsity * a.numel())).view_as(w).to(w.dtype)
    target = w * keep
    if recover == "mean":
        drop = 1 - keep
        mean = (w * drop).flatten(1).sum(1) / drop.flatten(1).sum(1).clamp_min(1)
        target = target + drop * mean.view(-1, *([1] * (w.dim() - 1)))
    return w + (target - w).detach()


class SubnetSampler:
    """Forward passes of ``model`` pruned at a sampled sparsity, straight-through.

    ``sample(step)`` is deterministic in ``(seed, step)``. ``how`` picks the draw:
    ``sandwich`` (default) takes the highest sparsity on odd steps and a uniform draw on
    even ones (the "sandwich rule" of slimmable networks: the hardest subnetwork is trained
    every other step); ``uniform`` draws from the range on every step; ``high`` draws with
    density rising linearly toward the top of the range (where the gap to a dedicated
    model is largest). :meth:`samples` gives ``count`` sparsities for one step (the
    sandwich: the top of the range first, then draws). The model itself is not changed:
    each selected weight is swapped for its pruned version for one forward pass (see
    :func:`weights_replaced`), so any layer type runs its own forward.
    """

    def __init__(
        self,
        model: nn.Module,
        sparsity: tuple[float, float] | float | str,
        recover: str = "zero",
        seed: int = 0,
        include: Patterns = None,
        exclude: Patterns = None,
        keep_first_conv: bool | None = None,
        how: str = "sandwich",
    ) -> None:
        rng = check_range(sparsity)
        self.lo, self.hi = rng if isinstance(rng, tuple) else (rng, rng)
        check_choice("recover", recover, RECOVER)
        check_choice("sample", how, SAMPLES)
        self.recover, self.seed, self.model, self.how = recover, seed, model, how
        self.targets = select_weights(model, include, exclude, keep_first_conv)

    def _draw(self, step: int, k: int = 0) -> float:
        u = random.Random(self.seed * 1_000_003 + step + k * 7_919_009).random()
        if self.how == "high":
            u = math.sqrt(u)  # density 2u on [0, 1]: twice as many draws at the top
        return self.lo + (self.hi - self.lo) * u

    def sample(self, step: int) -> float:
        """The sparsity trained at ``step`` (one subnetwork per step)."""
        if self.how == "sandwich" and step % 2:
            return self.hi
        if self.how == "sandwich":  # the draw of the earlier releases, kept bit for bit
            return random.Random(self.seed * 1_000_003 + step).uniform(self.lo, self.hi)
        return self._draw(step)

    def samples(self, step: int, count: int) -> list[float]:
        """``count`` sparsities for one step; with the sandwich rule and ``count`` > 1 the
        top of the range is always one of them."""
        if count == 1:
            return [self.sample(step)]
        first = [self.hi] if self.how == "sandwich" else []
        return first + [self._draw(step, k) for k in range(len(first), count)]

    def forward(self, x: Tensor, sparsity: float) -> Tensor:
        """``model(x)`` with every selected layer pruned at ``sparsity`` (straight-through).

        BatchNorm running statistics are left alone (they keep tracking the dense network;
        re-estimate them at deploy time with :func:`pof.recalibrate_bn`).
        """
        with self.pruned(sparsity):
            return self.model(x)

    @contextmanager
    def pruned(self, sparsity: float) -> Iterator[None]:
        """Every forward pass of the model inside runs pruned at ``sparsity``
        (straight-through), BatchNorm running statistics left alone."""
        with bn_stats_frozen(self.model):
            pairs = [(t, _straight_through_target(t, sparsity, self.recover))
                     for t in self.targets]
            with weights_replaced(pairs):
                yield


@contextmanager
def bn_stats_frozen(model: nn.Module) -> Iterator[None]:
    """Forward passes that leave BatchNorm running statistics alone (momentum 0), in
    whatever mode the model is: a subnetwork's pass, or the teacher's pass of in-place
    distillation."""
    bns = batchnorms(model)
    momenta = [b.momentum for b in bns]
    for b in bns:
        b.momentum = 0.0
    try:
        yield
    finally:
        for b, mo in zip(bns, momenta, strict=True):
            b.momentum = mo


def _straight_through_target(t: Target, sparsity: float, recover: str) -> Tensor:
    """:func:`straight_through_prune` of a target's weight (per q/k/v block, unit-major)."""
    pieces = [straight_through_prune(p, sparsity, recover) for p in t.pieces()]
    return from_units(torch.cat(pieces) if len(pieces) > 1 else pieces[0], t.unit_dim)


@contextmanager
def weights_replaced(pairs: list[tuple[Target, Tensor]]) -> Iterator[None]:
    """Run the model with each target's effective weight replaced by the given tensor.

    A plain weight is swapped in the module's parameter dict (as ``torch.func`` does); a
    parametrized one (sphere, mask) through :func:`torch.nn.utils.parametrize.cached`'s
    cache, so every layer type's own forward runs unchanged.
    """
    saved: list[tuple[nn.Module, str, bool, Tensor | None]] = []
    with parametrize.cached():
        try:
            for t, w in pairs:
                m = t.module
                if parametrize.is_parametrized(m, t.attr):
                    key = (id(m), t.attr)
                    saved.append((m, t.attr, True, parametrize._cache.get(key)))
                    parametrize._cache[key] = w
                else:
                    saved.append((m, t.attr, False, m._parameters[t.attr]))
                    m._parameters[t.attr] = w
            yield
        finally:
            for m, attr, cached, old in reversed(saved):
                if not cached:
                    m._parameters[attr] = old
                elif old is None:
                    parametrize._cache.pop((id(m), attr), None)
                else:
                    parametrize._cache[(id(m), attr)] = old
