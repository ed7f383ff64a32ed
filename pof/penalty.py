"""The pruning-aware loss term: shrink what will be pruned, keep the rest clear of zero.

For each selected layer with effective weight ``W`` (on the sphere after ``to_sphere``)
and the set ``P`` of its ``sparsity`` fraction of smallest-magnitude entries (the weights
``pof.prune`` would remove; re-chosen every ``refresh_every`` calls):

    energy(W)  = ||W[P]||^2 / ||W||^2                      (pruned-energy fraction)
    margin(W)  = mean over kept i of relu(tau - |W_i|)^2 / tau^2,
                 tau = margin * ||W|| / sqrt(numel(W))     (a fraction of the RMS weight)
    penalty    = weight * mean over layers of (energy + beta * margin)

On the sphere ``||W||`` is fixed per unit, so the penalty cannot shrink a whole filter; it
moves energy from the pruned set to the kept one. Pruning then tilts each unit by
``cos = sqrt(1 - energy)``, which is what makes one-shot pruning harmless. With
``scope="global"`` the set ``P`` comes from one threshold over all layers and ``energy``
is the pruned share of the total. See docs/method.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .masks import check_sparsity, compute_masks
from .selection import select_layers


class PrunePenalty(nn.Module):
    """Loss term for a target ``sparsity``; ``penalty()`` returns a scalar tensor.

    Args:
        model: any module; the same layers as ``pof.prune`` are selected by default.
        sparsity: target fraction of weights to prune, in [0, 1).
        scope: "layer" (each layer to ``sparsity``) or "global" (one threshold).
        weight: multiplier of the whole term.
        beta: weight of the margin term that keeps kept weights away from zero.
        margin: ``tau`` as a fraction of each layer's RMS weight.
        refresh_every: re-select the pruned set every this many calls (1 = every call).
    """

    def __init__(
        self,
        model: nn.Module,
        sparsity: float,
        scope: str = "layer",
        weight: float = 1.0,
        beta: float = 0.1,
        margin: float = 0.5,
        refresh_every: int = 50,
        include: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        keep_first_conv: bool = True,
    ) -> None:
        super().__init__()
        if scope not in ("layer", "global"):
            raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
        if refresh_every < 1:
            raise ValueError(f"refresh_every must be >= 1, got {refresh_every}")
        self.sparsity = check_sparsity(sparsity)
        self.scope, self.weight, self.beta, self.margin = scope, weight, beta, margin
        self.refresh_every = refresh_every
        layers = select_layers(model, include, exclude, keep_first_conv)
        self.names = [n for n, _ in layers]
        self._layers = [m for _, m in layers]  # plain list: not registered as children
        self.calls = 0
        self._masks: list[Tensor] | None = None

    def weights(self) -> list[Tensor]:
        """Current effective weights of the selected layers (differentiable)."""
        return [m.weight for m in self._layers]

    @torch.no_grad()
    def refresh(self, weights: list[Tensor] | None = None) -> None:
        """Re-select the pruned set from the current weight magnitudes."""
        ws = [w.detach() for w in (weights or self.weights())]
        self._masks = compute_masks(ws, self.sparsity, self.scope, names=self.names)

    def pruned_energy(self, weights: list[Tensor] | None = None) -> Tensor:
        """Pruned-energy fraction (mean over layers, or of the total for global scope)."""
        ws = weights or self.weights()
        if self._masks is None:
            self.refresh(ws)
        pruned = [(w * w).masked_fill(k, 0).sum() for w, k in zip(ws, self._masks, strict=True)]
        totals = [(w * w).sum().clamp_min(1e-12) for w in ws]
        if self.scope == "global":
            return torch.stack(pruned).sum() / torch.stack(totals).sum()
        return torch.stack([p / t for p, t in zip(pruned, totals, strict=True)]).mean()

    def margin_term(self, weights: list[Tensor] | None = None) -> Tensor:
        """Mean over layers of the normalised squared shortfall of kept weights below tau."""
        ws = weights or self.weights()
        if self._masks is None:
            self.refresh(ws)
        terms = []
        for w, keep in zip(ws, self._masks, strict=True):
            tau = self.margin * w.detach().norm() / w.numel() ** 0.5
            gap = torch.relu(tau - w.abs()).masked_fill(~keep, 0)
            terms.append((gap * gap).sum() / (keep.sum().clamp_min(1) * tau.clamp_min(1e-12) ** 2))
        return torch.stack(terms).mean()

    def forward(self) -> Tensor:
        """The penalty (a scalar tensor to add to the task loss)."""
        ws = self.weights()
        if self._masks is None or (self.training and self.calls % self.refresh_every == 0):
            self.refresh(ws)
        if self.training:
            self.calls += 1
        out = self.pruned_energy(ws)
        if self.beta:
            out = out + self.beta * self.margin_term(ws)
        return self.weight * out

    def extra_repr(self) -> str:
        return (f"sparsity={self.sparsity}, scope={self.scope!r}, weight={self.weight}, "
                f"beta={self.beta}, margin={self.margin}, refresh_every={self.refresh_every}, "
                f"layers={len(self.names)}")


class L1Penalty(nn.Module):
    """Plain L1 regularisation of the selected layers' weights (the conventional baseline)."""

    def __init__(
        self,
        model: nn.Module,
        weight: float = 1e-5,
        include: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        keep_first_conv: bool = True,
    ) -> None:
        super().__init__()
        self.weight = weight
        self._layers = [m for _, m in select_layers(model, include, exclude,
                                                         keep_first_conv)]

    def forward(self) -> Tensor:
        return self.weight * torch.stack([m.weight.abs().sum() for m in self._layers]).sum()
