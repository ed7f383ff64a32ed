"""pof: Pruning On-the-Fly — prune PyTorch models without retraining.

Core (works on any ``nn.Module``, needs only torch): :func:`to_sphere`,
:class:`PrunePenalty`, :func:`prune`, :func:`remove`, :func:`sparsity_report`,
:func:`recalibrate_bn`. Training methods any loop can drive (:class:`OnTheFly` — one
model for every sparsity in a range —, :class:`OneTarget`, :class:`GMP`, :class:`CramStyle`,
:class:`L1`; :mod:`pof.methods`). Models: :func:`create_model`; :func:`load` / :func:`save` a
model with what pof put on it (needs the ``train`` extra). Whole channels
(:func:`channel_groups`, :func:`prune_channels`, :func:`remove_channels`) and
:func:`export_onnx` need the ``speed`` extra on first use. Data, training, reports and the
CLI live in subpackages that need the extras (``pip install pof[all]``).
"""

import importlib

_EXPORTS = {
    "core.bn_recal": ["recalibrate_bn"],
    "core.fold": ["fold", "remove"],
    "core.folded": ["FoldedConv1d", "FoldedConv2d", "FoldedConv3d", "FoldedConvTranspose1d",
                    "FoldedConvTranspose2d", "FoldedConvTranspose3d", "FoldedEmbedding",
                    "FoldedLinear", "FoldedMultiheadAttention", "is_folded"],
    "core.masks": ["compute_masks"],
    "core.penalty": ["L1Penalty", "PrunePenalty"],
    "core.parametrizations": ["PruneMask", "is_pruned"],
    "core.prune": ["prune", "unprune"],
    "core.selection": ["Selection", "select_layers", "select_weights"],
    "core.sparsity": ["SparsityReport", "sparsity_report"],
    "core.sphere": ["UnitSphere", "from_sphere", "is_sphere", "to_sphere"],
    "errors": ["PofError"],
    "export.onnx": ["export_onnx"],
    "methods": ["ChannelRange", "CramStyle", "GMP", "L1", "Method", "OnTheFly", "OneTarget"],
    "models": ["create_model", "list_models"],
    "saving": ["load", "save"],
    "structured": ["channel_groups", "prune_channels", "remove_channels"],
    "workflows": ["evaluate_checkpoint", "export_checkpoint", "finetune_checkpoint",
                  "prune_checkpoint", "sweep_checkpoints"],
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}

__version__ = "0.1.0"

__all__ = [
    "GMP", "L1", "ChannelRange", "CramStyle", "Method", "OnTheFly", "OneTarget",
    "FoldedConv1d", "FoldedConv2d", "FoldedConv3d", "FoldedConvTranspose1d",
    "FoldedConvTranspose2d", "FoldedConvTranspose3d", "FoldedEmbedding", "FoldedLinear",
    "FoldedMultiheadAttention", "L1Penalty", "PofError", "PruneMask", "PrunePenalty",
    "Selection", "SparsityReport", "UnitSphere", "channel_groups", "compute_masks",
    "create_model", "evaluate_checkpoint", "export_checkpoint", "export_onnx",
    "finetune_checkpoint", "prune_checkpoint", "sweep_checkpoints", "fold", "from_sphere",
    "is_folded", "is_pruned",
    "is_sphere", "list_models", "load", "prune", "prune_channels", "recalibrate_bn",
    "remove", "remove_channels", "save", "select_layers", "select_weights", "sparsity_report",
    "to_sphere",
    "unprune",
]


def __getattr__(name: str):
    # imported on first use, so that `pof` (the command) starts without torch and
    # Ctrl-C during start-up is handled by the CLI
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pof' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
