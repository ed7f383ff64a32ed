"""Deploy steps as library calls — what ``pof prune``, ``sweep``, ``eval``, ``export`` and
``finetune`` do, each one function (the commands only parse their flags):

=========================== =============================================================
``prune_checkpoint``        one-shot prune (weights or channels, fill, BatchNorm
                            re-estimation, by ratio or by measured speed-up), top-1 before
                            and after, the output checkpoint with its record
``sweep_checkpoints``       checkpoints × sparsities × fills: table, JSON and plots
``evaluate_checkpoint``     top-1 / top-5 / loss on the held-out split
``export_checkpoint``       compact sparse safetensors, or ONNX with deploy metadata
``finetune_checkpoint``     fine-tune a pruned checkpoint with its masks fixed
=========================== =============================================================

Every one follows the one data rule (:mod:`pof.workflows.data_rule`); ``pof.load`` reads
a checkpoint back as a model and its metadata.
"""

from .checkpoints import evaluate_checkpoint, export_checkpoint
from .prune import PruneOptions, prune_checkpoint
from .sweeps import sweep_checkpoints
from .training import finetune_checkpoint

__all__ = ["PruneOptions", "evaluate_checkpoint", "export_checkpoint", "finetune_checkpoint",
           "prune_checkpoint", "sweep_checkpoints"]
