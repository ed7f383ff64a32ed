"""Sparsity report: zeros per weight and overall, as data and as a printable table.

Every layer weight of the model is listed (see :func:`pof.core.selection.weight_inventory`),
including the ones pof leaves dense, each with the reason; the global line is over all of
them, so a transformer's embeddings or an unsupported layer show in its true sparsity.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .parametrizations import mask_param, pruned_layers
from .selection import Patterns, weight_inventory
from .targets import weight_key


@dataclass
class LayerSparsity:
    """Zeros in one layer's effective weight ``name.param``; ``dense`` says why pof left
    it dense (None: pof selects it)."""

    name: str
    zeros: int
    numel: int
    param: str = "weight"
    dense: str | None = None

    @property
    def key(self) -> str:
        return weight_key(self.name, self.param)

    @property
    def sparsity(self) -> float:
        return self.zeros / self.numel if self.numel else 0.0


@dataclass
class SparsityReport:
    """Per-layer rows and the global total (over the layers listed)."""

    layers: list[LayerSparsity] = field(default_factory=list)

    @property
    def zeros(self) -> int:
        return sum(r.zeros for r in self.layers)

    @property
    def numel(self) -> int:
        return sum(r.numel for r in self.layers)

    @property
    def sparsity(self) -> float:
        return self.zeros / self.numel if self.numel else 0.0

    def to_dict(self) -> dict:
        return {
            "layers": [asdict(r) | {"sparsity": r.sparsity} for r in self.layers],
            "zeros": self.zeros, "numel": self.numel, "sparsity": self.sparsity,
        }

    def __str__(self) -> str:
        width = max([len(r.key) + 1 for r in self.layers] + [6])
        lines = [f"{r.key + ':':<{width}} {100 * r.sparsity:6.2f}% of {r.numel:>11,} zero"
                 + (f"  (dense: {r.dense})" if r.dense else "") for r in self.layers]
        lines.append(f"{'global:':<{width}} {100 * self.sparsity:6.2f}% of {self.numel:>11,} zero")
        return "\n".join(lines)


def sparsity_report(
    model: nn.Module,
    include: Patterns = None,
    exclude: Patterns = None,
    keep_first_conv: bool | None = None,
) -> SparsityReport:
    """Zeros/params of every layer weight (as the layer computes it), with dense reasons.

    The selection (recorded on the model unless ``include``/``exclude``/
    ``keep_first_conv`` are given) only shapes the reasons. For a mean-recovered weight
    the masked entries count as zeros: they are stored as zeros once folded (see
    ``pof.remove``); kept entries that are zero count too.
    """
    any_pruned = bool(pruned_layers(model))
    rows = []
    with torch.no_grad():
        for info in weight_inventory(model, include, exclude, keep_first_conv):
            m = model.get_submodule(info.name)
            w = getattr(m, info.attr)
            p = mask_param(m, info.attr)
            zero = w == 0
            zeros = int((~p.mask | zero).sum()) if p is not None else int(zero.sum())
            dense = None if p is not None else info.reason
            if dense is None and p is None and any_pruned:
                dense = "not pruned"
            rows.append(LayerSparsity(info.name, zeros, w.numel(), info.attr, dense))
    return SparsityReport(rows)
