"""Export to ONNX, checked against PyTorch with onnxruntime.

Any pof model exports: dense, unstructured-pruned (masks made permanent first, mean
recovery folded and then written as a plain layer), channel-pruned (channels removed: a
smaller dense model), on the sphere (baked to plain weights). The TorchScript exporter
(``torch.onnx.export(..., dynamo=False)``) writes the graph; ``onnxruntime`` (optional,
``pip install 'pof[speed]'``) checks it.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..core.channel_masks import is_channel_pruned
from ..core.fold import as_dense, remove
from ..core.folded import is_folded
from ..core.parametrizations import pruned_layers
from ..core.selection import replace_module
from ..core.sphere import from_sphere, is_cosine, sphere_layers
from ..errors import PofError
from ..fileio import atomic_path
from ..optional import require


def plain_for_export(model: nn.Module) -> nn.Module:
    """Make ``model`` plain in place: masks permanent (channels removed), sphere baked, and
    each mean-folded layer a plain layer with its effective (dense) weight, so that
    exporters fuse it with the BatchNorm after it like any other layer."""
    if is_channel_pruned(model):
        from ..structured import remove_channels

        remove_channels(model)
    elif pruned_layers(model):
        remove(model)
    layers = sphere_layers(model)
    if layers and not any(is_cosine(m) for _, m in layers):
        from_sphere(model)
    for name, m in list(model.named_modules()):
        if is_folded(m):
            replace_module(model, name, as_dense(m))
    return model


def session(path: str | os.PathLike, threads: int = 1) -> Any:
    """An onnxruntime CPU session with ``threads`` intra-op threads (all graph optimisations)."""
    ort = require("onnxruntime", "checking an ONNX export")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@torch.no_grad()
def _outputs(model: nn.Module, x: Tensor) -> Tensor:
    was = model.training
    model.eval()
    try:
        return model(x).float().cpu()
    finally:
        model.train(was)


def max_error(path: str | os.PathLike, model: nn.Module, x: Tensor) -> float:
    """Largest absolute difference between onnxruntime's and PyTorch's outputs on ``x``."""
    ref = _outputs(model, x).numpy()
    out = session(path).run(None, {"input": x.float().cpu().numpy()})[0]
    return float(abs(out - ref).max())


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    example_inputs: Tensor,
    opset: int = 17,
    check: bool = True,
    atol: float = 1e-4,
    metadata: dict[str, str] | None = None,
) -> float:
    """Write ``model`` (made plain first, in place, and moved to the CPU) to ``path`` as
    ONNX with a dynamic batch size; ``metadata`` (strings) goes into the model's
    ``metadata_props`` (onnxruntime: ``session.get_modelmeta().custom_metadata_map``).

    With ``check=True`` runs it in onnxruntime on ``example_inputs`` and on a random batch
    of 3, and raises :class:`PofError` if the outputs differ from PyTorch's by more than
    ``atol`` (relative to the output scale when that exceeds 1). Returns the largest
    difference (NaN unchecked).
    """
    if check:
        require("onnxruntime", "checking an ONNX export")  # before the work
    plain_for_export(model)
    model.cpu()
    x = example_inputs.detach().cpu().float()
    with atomic_path(path) as tmp:  # a failed export or check leaves no file behind
        _write(model, x, tmp, opset)
        if metadata:
            _set_metadata(tmp, metadata)
        if not check:
            return float("nan")
        g = torch.Generator().manual_seed(0)
        xs = [x, torch.randn(3, *x.shape[1:], generator=g)]
        err = max(max_error(tmp, model, xi) for xi in xs)
        scale = max(1.0, float(_outputs(model, xs[1]).abs().max()))
        if err > atol * scale:
            raise PofError(f"{path}: onnxruntime's outputs differ from PyTorch's by "
                           f"{err:.3g} (> {atol:g})")
    return err


def _write(model: nn.Module, x: Tensor, path: Path, opset: int) -> None:
    was = model.training
    model.eval()
    try:
        # with gradients enabled: under no_grad attention takes its fused kernel, which the
        # TorchScript exporter cannot write
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
            torch.onnx.export(model, (x,), str(path), input_names=["input"],
                              output_names=["output"], opset_version=opset, dynamo=False,
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    finally:
        model.train(was)


def _set_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Add ``metadata`` to the ONNX file's ``metadata_props`` (strings only)."""
    onnx = require("onnx", "writing ONNX metadata")
    bad = [k for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))]
    if bad:
        raise PofError(f"ONNX metadata keys and values must be strings: {bad[0]!r}")
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props},
                                        **metadata})
    onnx.save(proto, str(path))


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file, read back with onnxruntime."""
    return dict(session(path).get_modelmeta().custom_metadata_map)


def deploy_metadata(meta: dict[str, Any], model: nn.Module | None = None) -> dict[str, str]:
    """What a deployer needs, from a checkpoint's metadata, as ONNX ``metadata_props``
    (``pof.*`` keys, JSON values): the input normalisation (``x = (pixel / 255 - mean) /
    std`` per channel), image size, class names where known, architecture, structure,
    sparsity and width (the fraction of channels kept), parameters, and the measured latency
    of ``pof prune --speedup``."""
    data, pruned = meta.get("data") or {}, meta.get("pruned") or {}
    arch = (meta.get("arch") or {}).get("name")
    structure = pruned.get("structure", "dense") if pruned else "dense"
    s = pruned.get("sparsity") if isinstance(pruned.get("sparsity"), int | float) else 0.0
    if isinstance(pruned.get("pattern"), str):  # N:M: the pattern fixes the sparsity
        from ..core.masks import parse_nm

        n, m = parse_nm(pruned["pattern"])
        s = 1 - n / m
    out = {"pof.input": "float32 [N, C, H, W], x = (pixel / 255 - mean) / std per channel",
           "pof.structure": str(structure), "pof.sparsity": f"{s:g}",
           "pof.width": f"{1 - s if structure == 'channel' else 1.0:g}"}
    if isinstance(pruned.get("channels_removed"), int | float):  # --round-to: what was kept
        out["pof.width"] = f"{1 - pruned['channels_removed']:g}"
    if isinstance(pruned.get("pattern"), str):
        out["pof.pattern"] = pruned["pattern"]
    for key in ("mean", "std", "image_size", "classes"):
        if data.get(key) is not None:
            out[f"pof.{key}"] = json.dumps(data[key])
    if isinstance(arch, str):
        out["pof.arch"] = arch
    if model is not None:
        out["pof.params"] = str(sum(p.numel() for p in model.parameters()))
    lat = meta.get("latency")
    if isinstance(lat, dict):  # never checked on load: taken only as plain JSON values
        out["pof.latency"] = json.dumps({k: lat[k] for k in (
            "ms", "speedup", "dense_ms", "batch", "threads", "runtime", "machine") if k in lat})
    return out
