"""pof: Pruning On-the-Fly — prune PyTorch models without retraining.

Core (works on any ``nn.Module``): :func:`to_sphere`, :class:`PrunePenalty`, :func:`prune`,
:func:`remove`, :func:`sparsity_report`, :func:`recalibrate_bn`. Models: :func:`create_model`.
"""

from .bn_recal import recalibrate_bn
from .masks import compute_masks
from .penalty import L1Penalty, PrunePenalty
from .prune import (
    FoldedConv1d,
    FoldedConv2d,
    FoldedConv3d,
    FoldedConvTranspose1d,
    FoldedConvTranspose2d,
    FoldedEmbedding,
    FoldedLinear,
    FoldedMultiheadAttention,
    PruneMask,
    fold,
    is_folded,
    is_pruned,
    prune,
    remove,
    unprune,
)
from .selection import select_layers, select_weights
from .sparsity import SparsityReport, sparsity_report
from .sphere import UnitSphere, from_sphere, is_sphere, to_sphere

__version__ = "0.1.0"

__all__ = [
    "FoldedConv1d", "FoldedConv2d", "FoldedConv3d", "FoldedConvTranspose1d",
    "FoldedConvTranspose2d", "FoldedEmbedding", "FoldedLinear", "FoldedMultiheadAttention",
    "L1Penalty", "PruneMask", "PrunePenalty", "SparsityReport",
    "UnitSphere", "compute_masks", "create_model", "fold", "from_sphere", "is_pruned",
    "is_folded", "is_sphere", "list_models", "prune", "recalibrate_bn", "remove", "select_layers",
    "select_weights",
    "sparsity_report", "to_sphere", "unprune",
]


def __getattr__(name: str):
    # models are a convenience on top of the core: import them lazily
    if name in ("create_model", "list_models"):
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'pof' has no attribute {name!r}")
