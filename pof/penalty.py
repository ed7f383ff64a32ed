"""The pruning-aware loss term: shrink what will be pruned, keep the rest clear of zero.

For each selected layer with effective weight ``W`` (on the sphere after ``to_sphere``)
and the set ``P`` of its ``sparsity`` fraction of smallest-magnitude entries (the weights
``pof.prune`` would remove; re-chosen every ``refresh_every`` calls):

    energy(W)  = ||W[P]||^2 / ||W||^2                      (pruned-energy fraction)
    margin(W)  = mean over kept i of relu(tau - |W_i|)^2 / tau^2,
                 tau = margin * ||W|| / sqrt(numel(W))     (a fraction of the RMS weight)
    penalty    = weight * mean over layers of (energy + beta * margin)

``form="sine"`` uses ``sqrt(energy)`` instead of ``energy``: the sine of the angle by which
pruning tilts the layer (the relative output error it causes). Its gradient does not fade
as the pruned weights shrink (a group lasso on the pruned set), so it drives the pruned
energy much lower than the quadratic form, which matters at high sparsity.

On the sphere ``||W||`` is fixed per unit, so the penalty cannot shrink a whole filter; it
moves energy from the pruned set to the kept one. Pruning then tilts each unit by
``cos = sqrt(1 - energy)``, which is what makes one-shot pruning harmless. With
``scope="global"`` the set ``P`` comes from one threshold over all layers and ``energy``
is the pruned share of the total.

A *range* ``sparsity=(lo, hi)`` prepares one model for every sparsity in it: the penalty
is the mean of the terms for ``levels`` nested pruned sets ``P_lo ⊂ … ⊂ P_hi``, so the
smallest weights (pruned at every level) are pushed hardest and the band that only the
highest level removes is pushed least. See docs/method.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .masks import check_range, compute_masks, parse_nm
from .selection import select_weights

FORMS = ("energy", "sine")


class PrunePenalty(nn.Module):
    """Loss term for a target ``sparsity``; ``penalty()`` returns a scalar tensor.

    Args:
        model: any module; the same layers as ``pof.prune`` are selected by default.
        sparsity: target fraction of weights to prune, in [0, 1), or a range ``(lo, hi)``
            (also ``"lo:hi"``) for a model meant to be pruned anywhere in it.
        scope: "layer" (each layer to ``sparsity``) or "global" (one threshold).
        weight: multiplier of the whole term.
        beta: weight of the margin term that keeps kept weights away from zero.
        margin: ``tau`` as a fraction of each layer's RMS weight.
        refresh_every: re-select the pruned set every this many calls (1 = every call).
        form: "energy" (pruned-energy fraction) or "sine" (its square root).
        levels: with a range, the number of nested pruned sets (evenly spaced, ends
            included).
        structure: "weight" (single weights) or "channel": the pruned set is whole channels,
            judged and pushed through the input columns of the layers that read them (see
            :mod:`pof.structured`; ``sparsity`` is the fraction of each channel group).
        pattern: "N:M" pushes the weights an N:M prune removes (``sparsity`` None or 1-N/M).
        example_inputs: input used to trace the model for ``structure="channel"``.
    """

    def __init__(
        self,
        model: nn.Module,
        sparsity: float | tuple[float, float] | str | None,
        scope: str = "layer",
        weight: float = 20.0,
        beta: float = 0.1,
        margin: float = 0.5,
        refresh_every: int = 50,
        include: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        keep_first_conv: bool = True,
        form: str = "sine",
        levels: int = 4,
        structure: str = "weight",
        pattern: str | None = None,
        example_inputs: Tensor | None = None,
    ) -> None:
        super().__init__()
        sparsity, self.pattern = _check_pattern(sparsity, pattern, structure)
        if scope not in ("layer", "global"):
            raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        self.form = form
        if refresh_every < 1:
            raise ValueError(f"refresh_every must be >= 1, got {refresh_every}")
        self.sparsity = check_range(sparsity)
        if isinstance(self.sparsity, tuple):
            if levels < 2:
                raise ValueError(f"a sparsity range needs levels >= 2, got {levels}")
            lo, hi = self.sparsity
            self.levels = [lo + (hi - lo) * k / (levels - 1) for k in range(levels)]
        else:
            self.levels = [self.sparsity]
        self.scope, self.weight, self.beta, self.margin = scope, weight, beta, margin
        self.refresh_every = refresh_every
        self.structure, self._plan, self._layers = structure, None, []
        if structure == "channel":
            from .structured import channel_groups

            if scope != "layer" or include is not None:
                raise ValueError("structure='channel' works per channel group: no "
                                 "scope='global' or include (exclude keeps a layer's outputs)")
            self._plan = channel_groups(model, example_inputs, exclude)
            mods = dict(model.named_modules())
            self.names = self._plan.consumers
            self._layers = [mods[n] for n in self.names]  # plain list: not children
        else:
            self._targets = select_weights(model, include, exclude, keep_first_conv)
            # q/k/v blocks of an attention in_proj_weight count as three layers
            self.names = [n for t in self._targets for n in t.piece_names()]
        self.calls = 0
        self._masks: list[Tensor] | None = None
        self._layer_id: Tensor | None = None

    def weights(self) -> list[Tensor]:
        """Current effective weights of the selected layers (differentiable), unit axis
        first; attention in_proj weights split into their q/k/v blocks."""
        if self._plan is not None:  # channels: the consumers' weights, whole
            return [m.weight for m in self._layers]
        return [p for t in self._targets for p in t.pieces()]

    @torch.no_grad()
    def refresh(self, weights: list[Tensor] | None = None) -> None:
        """Re-select the pruned set from the current weight magnitudes."""
        ws = [w.detach() for w in (weights or self.weights())]
        if len(self.levels) == 1:
            self._masks = self._select(ws, self.levels[0])
        else:  # how many levels prune each weight (0 = kept at every level)
            depth = [torch.zeros_like(w, dtype=torch.uint8) for w in ws]
            for s in self.levels:
                for d, keep in zip(depth, self._select(ws, s), strict=True):
                    d += ~keep
            self._masks = depth
        self._flat_state(ws)

    def _select(self, ws: list[Tensor], sparsity: float) -> list[Tensor]:
        """Keep-masks of what pruning at ``sparsity`` removes (weights, N:M or channels)."""
        if self._plan is not None:
            masks = self._plan.masks_at(sparsity, dict(zip(self.names, ws, strict=True)))
            return [masks[n] for n in self.names]
        return compute_masks(ws, sparsity, self.scope, self.pattern, self.names)

    def load_masks(self, masks: list[Tensor]) -> None:
        """Use these masks (e.g. from a checkpoint) until the next refresh: boolean keep-masks
        for a single target, per-weight level counts (uint8) for a range."""
        ws = [w.detach() for w in self.weights()]
        self._masks = [m.to(w.device) for m, w in zip(masks, ws, strict=True)]
        self._flat_state(ws)

    def _flat_state(self, ws: list[Tensor]) -> None:
        # Everything below works on all layers at once, concatenated: a handful of large
        # ops instead of a dozen small ones per layer (the step overhead is in the launches).
        flat = torch.cat([k.flatten() for k in self._masks])
        if flat.dtype == torch.bool:  # single target: keep-mask
            depth = (~flat).to(torch.uint8)
        else:
            depth = flat
        # level k (ascending sparsity) prunes the weights with depth >= K - k
        k_all = len(self.levels)
        self._pruned_levels = torch.stack([(depth >= k_all - k) for k in range(k_all)]
                                          ).to(ws[0].dtype)
        keep = depth == 0
        sizes = torch.tensor([w.numel() for w in ws], device=keep.device)
        self._layer_id = torch.repeat_interleave(torch.arange(len(ws), device=keep.device),
                                                 sizes)
        self._keep = keep.to(ws[0].dtype)
        self._sizes = sizes.to(ws[0].dtype)
        self._keep_count = torch.zeros(len(ws), dtype=ws[0].dtype, device=keep.device
                                       ).index_add_(0, self._layer_id, self._keep).clamp_min(1)

    def _per_layer(self, values: Tensor) -> Tensor:
        out = torch.zeros(len(self.names), dtype=values.dtype, device=values.device)
        return out.index_add(0, self._layer_id, values)

    def _terms(self, ws: list[Tensor], form: str = "energy") -> tuple[Tensor, Tensor]:
        """(pruned-energy fraction or its sine, margin term) over the selected layers."""
        if self._masks is None:
            self.refresh(ws)
        elif self._keep.device != ws[0].device:  # the model moved since the refresh
            self.load_masks(self._masks)
        flat = torch.cat([w.flatten() for w in ws])
        sq = flat * flat
        total = self._per_layer(sq)
        pruned = torch.stack([self._per_layer(sq * p) for p in self._pruned_levels])
        if self.scope == "global":
            pruned, total = pruned.sum(1, keepdim=True), total.sum()
        frac = pruned / total.clamp_min(1e-12)  # (levels, layers)
        # sine: sqrt with a floor so that the gradient stays finite at exactly zero energy
        energy = (frac.clamp_min(1e-12).sqrt() if form == "sine" else frac).mean()
        tau = (self.margin * (total.detach() / self._sizes).sqrt()).clamp_min(1e-12)
        gap = torch.relu(tau[self._layer_id] - flat.abs()) * self._keep
        margin = (self._per_layer(gap * gap) / (self._keep_count * tau * tau)).mean()
        return energy, margin

    def pruned_energy(self, weights: list[Tensor] | None = None) -> Tensor:
        """Pruned-energy fraction (mean over layers, or of the total for global scope; with a
        range, also over the levels)."""
        return self._terms(weights or self.weights())[0]

    def level_energies(self) -> list[float]:
        """Pruned-energy fraction at each level (ascending sparsity), from the current sets."""
        ws = [w.detach() for w in self.weights()]
        self._terms(ws)
        flat = torch.cat([w.flatten() for w in ws])
        sq = flat * flat
        total = self._per_layer(sq).clamp_min(1e-12)
        return [(self._per_layer(sq * p) / total).mean().item() for p in self._pruned_levels]

    def margin_term(self, weights: list[Tensor] | None = None) -> Tensor:
        """Mean over layers of the normalised squared shortfall of kept weights below tau."""
        return self._terms(weights or self.weights())[1]

    def forward(self) -> Tensor:
        """The penalty (a scalar tensor to add to the task loss)."""
        ws = self.weights()
        if self._masks is None or (self.training and self.calls % self.refresh_every == 0):
            self.refresh(ws)
        if self.training:
            self.calls += 1
        energy, margin = self._terms(ws, self.form)
        return self.weight * (energy + self.beta * margin if self.beta else energy)

    def extra_repr(self) -> str:
        return (f"sparsity={self.sparsity}, levels={len(self.levels)}, scope={self.scope!r}, "
                f"weight={self.weight}, "
                f"beta={self.beta}, margin={self.margin}, refresh_every={self.refresh_every}, "
                f"form={self.form!r}, structure={self.structure!r}, pattern={self.pattern!r}, "
                f"layers={len(self.names)}")


def _check_pattern(sparsity, pattern: str | None, structure: str):
    """``(sparsity, pattern)`` checked together: a pattern fixes the sparsity at 1 - N/M."""
    if structure not in ("weight", "channel"):
        raise ValueError(f"structure must be 'weight' or 'channel', got {structure!r}")
    if pattern is None:
        if sparsity is None:
            raise ValueError("sparsity is required unless pattern='N:M' is given")
        return sparsity, None
    n, m = parse_nm(pattern)
    if structure != "weight":
        raise ValueError("an N:M pattern prunes single weights: use structure='weight'")
    if sparsity is not None and not (isinstance(sparsity, int | float)
                                     and abs(float(sparsity) - (1 - n / m)) < 1e-9):
        raise ValueError(f"sparsity {sparsity} disagrees with pattern {pattern} "
                         f"(= {1 - n / m:g}); pass sparsity=None")
    return 1 - n / m, pattern


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
        self._targets = select_weights(model, include, exclude, keep_first_conv)

    def forward(self) -> Tensor:
        return self.weight * torch.stack([t.weight.abs().sum() for t in self._targets]).sum()
