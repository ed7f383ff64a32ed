"""The pruning-aware loss term: shrink what will be pruned, keep the rest clear of zero.

For each selected weight ``W`` (effective: on the sphere after ``to_sphere``; each q/k/v
block of an attention ``in_proj_weight`` counts as a layer) and the set ``P`` of its
``sparsity`` fraction of smallest-magnitude entries (the weights ``pof.prune`` would
remove; re-chosen every ``refresh_every`` calls):

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

``pattern="N:M"`` makes the pruned set what an N:M prune removes; ``channels=`` (a
:class:`~pof.core.channels.ChannelPlan`, from :func:`pof.channel_groups`) makes it whole
channels: the input columns of the layers that read them (docs/method.md, sections 8-9).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import PofError
from .channels import ChannelPlan
from .masks import SCOPES, check_choice, check_pattern, check_range, compute_masks
from .selection import Patterns, record_selection, resolve_selection, select_weights
from .targets import Target

FORMS = ("energy", "sine")


def default_form_weight(sparsity: float | tuple[float, float] | list | None
                        ) -> tuple[str, float]:
    """The measured default ``(form, weight)`` for a checked ``sparsity``: sine at 20 for
    one target, energy at 5 for a range ``(lo, hi)`` (docs/results/on_the_fly.md; the sine
    form, which empties a single target's set within an epoch, would empty every nested
    set, the top one included: reasoned, not run; docs/method.md section 7). The one place
    this choice is made."""
    return ("energy", 5.0) if isinstance(sparsity, tuple | list) else ("sine", 20.0)


class PrunePenalty(nn.Module):
    """Loss term for a target ``sparsity``; ``penalty()`` returns a scalar tensor.

    Args:
        model: any module; the same layers as ``pof.prune`` are selected by default.
        sparsity: target fraction of weights to prune, in [0, 1), or a range ``(lo, hi)``
            (also ``"lo:hi"``) for a model meant to be pruned anywhere in it.
        scope: "layer" (each layer to ``sparsity``) or "global" (one threshold).
        weight: multiplier of the whole term (None: the measured default for ``sparsity``,
            :func:`default_form_weight`).
        beta: weight of the margin term that keeps kept weights away from zero.
        margin: ``tau`` as a fraction of each layer's RMS weight.
        refresh_every: re-select the pruned set every this many calls (1 = every call).
        form: "energy" (pruned-energy fraction) or "sine" (its square root); None: the
            measured default for ``sparsity``.
        levels: with a range, the number of nested pruned sets (evenly spaced, ends
            included).
        pattern: "N:M" pushes the weights an N:M prune removes (``sparsity`` None or
            ``1 - N/M``).
        channels: a channel plan (:func:`pof.channel_groups`): the pruned set is whole
            channels, judged and pushed through the layers that read them (``sparsity`` is
            the fraction of each channel group; no global scope, include or pattern).
    """

    def __init__(
        self,
        model: nn.Module,
        sparsity: float | tuple[float, float] | str | None,
        scope: str = "layer",
        weight: float | None = None,
        beta: float = 0.1,
        margin: float = 0.5,
        refresh_every: int = 50,
        include: Patterns = None,
        exclude: Patterns = None,
        keep_first_conv: bool | None = None,
        form: str | None = None,
        levels: int = 4,
        pattern: str | None = None,
        channels: ChannelPlan | None = None,
    ) -> None:
        super().__init__()
        check_choice("scope", scope, SCOPES)
        self.sparsity = check_range(check_pattern(sparsity, pattern))
        auto_form, auto_weight = default_form_weight(self.sparsity)
        form = auto_form if form is None else form
        weight = auto_weight if weight is None else weight
        check_choice("form", form, FORMS)
        self.form = form
        if refresh_every < 1:
            raise PofError(f"refresh_every must be >= 1, got {refresh_every}")
        self.pattern, self.channels = pattern, channels
        if isinstance(self.sparsity, tuple):
            if levels < 2:
                raise PofError(f"a sparsity range needs levels >= 2, got {levels}")
            lo, hi = self.sparsity
            self.levels = [lo + (hi - lo) * k / (levels - 1) for k in range(levels)]
        else:
            self.levels = [self.sparsity]
        self.scope, self.weight, self.beta, self.margin = scope, weight, beta, margin
        self.refresh_every = refresh_every
        if channels is not None:  # the weights that read the channels, whole
            if scope != "layer" or include is not None or pattern is not None:
                raise PofError("a channel penalty works per channel group: no scope='global', "
                               "include or pattern (the plan's exclude keeps a layer's outputs)")
            mods = dict(model.named_modules())
            self._targets = [Target(n, mods[n]) for n in channels.consumers]
        else:
            sel = resolve_selection(model, include, exclude, keep_first_conv)
            self._targets = select_weights(model, sel.include, sel.exclude, sel.keep_first_conv)
            record_selection(model, sel)
        # one "layer" per weight, or per q/k/v block of an attention in_proj_weight
        self.names = [n for t in self._targets for n in t.piece_names()]
        self.calls = 0
        for i in range(len(self.names)):  # masks of the pruned sets: buffers, None until set
            self.register_buffer(f"mask_{i}", None)
        for name in ("_keep", "_pruned_levels", "_layer_id", "_sizes", "_keep_count"):
            self.register_buffer(name, None, persistent=False)  # derived from the masks

    @property
    def masks(self) -> list[Tensor] | None:
        """The current masks, one per layer: keep-masks (bool, True = kept) for one target,
        level counts (uint8, 0 = kept at every level) for a range; None before a refresh."""
        masks = [getattr(self, f"mask_{i}") for i in range(len(self.names))]
        return None if masks[0] is None else masks

    def weights(self) -> list[Tensor]:
        """Current effective weights of the selected layers (differentiable), unit axis
        first; attention in_proj weights split into their q/k/v blocks."""
        return [p for t in self._targets for p in t.pieces()]

    def set_target(self, sparsity: float) -> None:
        """Move a single-target penalty to ``sparsity`` (e.g. along a schedule); the pruned
        set follows at the next refresh."""
        if len(self.levels) != 1 or self.pattern is not None or self.channels is not None:
            raise PofError("set_target moves a single weight-level target (no range, N:M or "
                           "channels)")
        self.levels = [float(check_range(sparsity))]

    @torch.no_grad()
    def refresh(self, weights: list[Tensor] | None = None) -> None:
        """Re-select the pruned set from the current weight magnitudes."""
        ws = [w.detach() for w in (weights or self.weights())]
        if len(self.levels) == 1:
            masks = self._select(ws, self.levels[0])
        else:  # how many levels prune each weight (0 = kept at every level)
            masks = [torch.zeros_like(w, dtype=torch.uint8) for w in ws]
            for s in self.levels:
                for d, keep in zip(masks, self._select(ws, s), strict=True):
                    d += ~keep
        self._set_masks(masks, ws)

    def _select(self, ws: list[Tensor], sparsity: float) -> list[Tensor]:
        """Keep-masks of what pruning at ``sparsity`` removes (weights, N:M or channels)."""
        if self.channels is not None:
            names = self.channels.consumers
            masks = self.channels.masks_at(sparsity, dict(zip(names, ws, strict=True)))
            return [masks[n] for n in names]
        return compute_masks(ws, sparsity, self.scope, self.pattern, self.names)

    def load_masks(self, masks: list[Tensor]) -> None:
        """Use these masks (e.g. from a checkpoint) until the next refresh: boolean keep-masks
        for a single target, per-weight level counts (uint8) for a range."""
        self._set_masks(masks, [w.detach() for w in self.weights()])

    def _set_masks(self, masks: list[Tensor], ws: list[Tensor]) -> None:
        for i, (m, w) in enumerate(zip(masks, ws, strict=True)):
            setattr(self, f"mask_{i}", m.to(w.device))
        # Everything below works on all layers at once, concatenated: a handful of large
        # ops instead of a dozen small ones per layer (the step overhead is in the launches).
        flat = torch.cat([k.flatten() for k in self.masks])
        depth = (~flat).to(torch.uint8) if flat.dtype == torch.bool else flat
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

    def _fractions(self, ws: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """``(frac, total, flat)``: pruned-energy fraction per level and layer (one column
        for global scope), total energy per layer (or overall), the flat weights."""
        if self.masks is None:
            self.refresh(ws)
        elif self._keep.device != ws[0].device:  # the model moved since the refresh
            self.load_masks(self.masks)
        flat = torch.cat([w.flatten() for w in ws])
        sq = flat * flat
        total = self._per_layer(sq)
        pruned = torch.stack([self._per_layer(sq * p) for p in self._pruned_levels])
        if self.scope == "global":
            pruned, total = pruned.sum(1, keepdim=True), total.sum()
        return pruned / total.clamp_min(1e-12), total, flat

    def _terms(self, ws: list[Tensor], form: str = "energy") -> tuple[Tensor, Tensor]:
        """(pruned-energy fraction or its sine, margin term) over the selected layers."""
        frac, total, flat = self._fractions(ws)  # frac: (levels, layers)
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
        with torch.no_grad():
            return self._fractions(self.weights())[0].mean(1).tolist()

    def forward(self) -> Tensor:
        """The penalty (a scalar tensor to add to the task loss)."""
        ws = self.weights()
        if self.masks is None or (self.training and self.calls % self.refresh_every == 0):
            self.refresh(ws)
        if self.training:
            self.calls += 1
        energy, margin = self._terms(ws, self.form)
        return self.weight * (energy + self.beta * margin if self.beta else energy)

    def extra_repr(self) -> str:
        return (f"sparsity={self.sparsity}, levels={len(self.levels)}, scope={self.scope!r}, "
                f"weight={self.weight}, "
                f"beta={self.beta}, margin={self.margin}, refresh_every={self.refresh_every}, "
                f"form={self.form!r}, pattern={self.pattern!r}, "
                f"channels={self.channels is not None}, layers={len(self.names)}")


class L1Penalty(nn.Module):
    """Plain L1 regularisation of the selected layers' weights (the conventional baseline)."""

    def __init__(
        self,
        model: nn.Module,
        weight: float = 1e-5,
        include: Patterns = None,
        exclude: Patterns = None,
        keep_first_conv: bool | None = None,
    ) -> None:
        super().__init__()
        self.weight = weight
        self._targets = select_weights(model, include, exclude, keep_first_conv)

    def forward(self) -> Tensor:
        return self.weight * torch.stack([t.weight.abs().sum() for t in self._targets]).sum()
