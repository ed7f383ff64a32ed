"""Deployable forms of a model: ONNX checked with onnxruntime (:mod:`pof.export.onnx`) and
2:4 semi-structured weights for sparse tensor cores (:mod:`pof.export.semi_structured`).

Compact sparse checkpoints are :func:`pof.training.checkpoint.save_checkpoint` with
``compact=True``.
"""

from .onnx import export_onnx, plain_for_export
from .semi_structured import check_two_four, to_semi_structured

__all__ = ["check_two_four", "export_onnx", "plain_for_export", "to_semi_structured"]
