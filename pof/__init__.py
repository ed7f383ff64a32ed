"""pof: Pruning On-the-Fly — prune PyTorch models without retraining.

Core (works on any ``nn.Module``): :func:`to_sphere`, :class:`PrunePenalty`, :func:`prune`,
:func:`remove`, :func:`sparsity_report`, :func:`recalibrate_bn`. Models: :func:`create_model`.
"""

from .bn_recal import recalibrate_bn
from .masks import compute_masks
from .penalty import L1Penalty, PrunePenalty
from .prune import FoldedConv2d, FoldedLinear, PruneMask, fold, is_pruned, prune, remove, unprune
from .selection import select_layers
from .sparsity import SparsityReport, sparsity_report
from .sphere import UnitSphere, from_sphere, is_sphere, to_sphere

__version__ = "0.1.0"

__all__ = [
    "FoldedConv2d", "FoldedLinear", "L1Penalty", "PruneMask", "PrunePenalty", "SparsityReport",
    "UnitSphere", "compute_masks", "create_model", "fold", "from_sphere", "is_pruned",
    "is_sphere", "list_models", "prune", "recalibrate_bn", "remove", "select_layers",
    "sparsity_report", "to_sphere", "unprune",
]


def __getattr__(name: str):
    # models are a convenience on top of the core: import them lazily
    if name in ("create_model", "list_models"):
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'pof' has no attribute {name!r}")
