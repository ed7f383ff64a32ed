"""Sparsity report: zeros per layer and overall, as data and as a printable table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .prune import mask_param
from .selection import PRUNABLE


@dataclass
class LayerSparsity:
    """Zeros in one layer's effective weight."""

    name: str
    zeros: int
    numel: int

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
        width = max([len(r.name) + 7 for r in self.layers] + [6])
        lines = [f"{r.name + '.weight:':<{width}} {100 * r.sparsity:6.2f}% of {r.numel:>11,} zero"
                 for r in self.layers]
        lines.append(f"{'global:':<{width}} {100 * self.sparsity:6.2f}% of {self.numel:>11,} zero")
        return "\n".join(lines)


def sparsity_report(model: nn.Module) -> SparsityReport:
    """Zeros/params of every Conv2d and Linear weight (as the layer computes it).

    For a mean-recovered layer the masked entries count as zeros: they are stored as
    zeros once folded (see ``pof.remove``); kept entries that are zero count too.
    """
    rows = []
    with torch.no_grad():
        for name, m in model.named_modules():
            if not isinstance(m, PRUNABLE):
                continue
            p = mask_param(m)
            zero = m.weight == 0
            zeros = int((~p.mask | zero).sum()) if p is not None else int(zero.sum())
            rows.append(LayerSparsity(name, zeros, m.weight.numel()))
    return SparsityReport(rows)
