"""Export to ONNX, checked against PyTorch with onnxruntime.

Any pof model exports: dense, unstructured-pruned (masks made permanent first, mean
recovery folded), channel-pruned (already a smaller dense model), on the sphere (baked to
plain weights). ``onnx`` and ``onnxruntime`` are optional (``pip install "pof[speed]"``)
and imported only here.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise ImportError("ONNX export needs onnx and onnxruntime: pip install 'pof[speed]'"
                          ) from None
    return onnxruntime


def plain_for_export(model: nn.Module) -> nn.Module:
    """Make ``model`` plain in place: masks permanent, sphere baked, and each mean-folded
    layer a plain layer with its effective (dense) weight, so that exporters fuse it with
    the BatchNorm after it like any other layer."""
    from .prune import FoldedConv2d, FoldedLinear, pruned_layers, remove
    from .sphere import from_sphere, sphere_layers
    from .structured import is_channel_pruned

    if is_channel_pruned(model) or pruned_layers(model):
        remove(model)
    if sphere_layers(model):
        from_sphere(model)
    for m in model.modules():
        if isinstance(m, FoldedConv2d | FoldedLinear) and not m._forward_hooks:
            with torch.no_grad():
                m.weight += m.recovery_mean.view(-1, *([1] * (m.weight.dim() - 1)))
            del m._buffers["recovery_mean"]
            m.__class__ = nn.Conv2d if isinstance(m, FoldedConv2d) else nn.Linear
    return model


def session(path: str | os.PathLike, threads: int = 1):
    """An onnxruntime CPU session with ``threads`` intra-op threads (all graph optimisations)."""
    ort = _ort()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def max_error(path: str | os.PathLike, model: nn.Module, x: Tensor) -> float:
    """Largest absolute difference between onnxruntime's and PyTorch's outputs on ``x``."""
    was = model.training
    model.eval()
    with torch.no_grad():
        ref = model(x).float().cpu().numpy()
    model.train(was)
    out = session(path).run(None, {"input": x.float().cpu().numpy()})[0]
    return float(abs(out - ref).max())


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    example_inputs: Tensor,
    opset: int = 17,
    check: bool = True,
    atol: float = 1e-4,
) -> float:
    """Write ``model`` (made plain first, in place) to ``path`` as ONNX, batch size dynamic.

    With ``check=True`` runs it in onnxruntime on ``example_inputs`` (and a batch of 3) and
    raises ``ValueError`` if the outputs differ from PyTorch's by more than ``atol``
    (relative to the output scale when that exceeds 1). Returns the largest difference.
    """
    plain_for_export(model)
    was = model.training
    model.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = example_inputs.detach().cpu().float()
    model.cpu()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(model, (x,), str(path), input_names=["input"],
                          output_names=["output"], opset_version=opset, dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    model.train(was)
    if not check:
        return float("nan")
    g = torch.Generator().manual_seed(0)
    xs = [x, torch.randn(3, *x.shape[1:], generator=g)]
    err = max(max_error(path, model, xi) for xi in xs)
    with torch.no_grad():
        scale = max(1.0, float(model.eval()(xs[1]).abs().max()))
    model.train(was)
    if err > atol * scale:
        raise ValueError(f"{path}: onnxruntime's outputs differ from PyTorch's by {err:.3g} "
                         f"(> {atol:g})")
    return err
