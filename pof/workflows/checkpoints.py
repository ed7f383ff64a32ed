"""Evaluate and export a checkpoint, as ``pof eval`` and ``pof export`` do."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import PofError
from .data_rule import data_source
from .steps import evaluator, load_on, write_onnx


def evaluate_checkpoint(checkpoint: str | Path, data: str | None = None,
                        batch_size: int = 256, device: str = "auto") -> dict[str, float]:
    """Top-1, top-5 and loss of a checkpoint on its data's held-out split (the one data
    rule picks the data)."""
    opts = argparse.Namespace(checkpoint=str(checkpoint), data=data, batch_size=batch_size,
                              device=device)
    model, meta = load_on(opts.checkpoint, opts.device)
    data = data_source(opts, meta, opts.checkpoint, "eval")
    return evaluator(model, data, opts.batch_size, meta, opts.checkpoint)(model)


def export_checkpoint(checkpoint: str | Path, out: str | Path,
                      format: str = "safetensors") -> Path:  # noqa: A002 - the CLI's word
    """A pruned checkpoint saved compactly (sparse on disk), or any checkpoint as ONNX
    (``format="onnx"``, checked against PyTorch with onnxruntime); returns the file."""
    opts = argparse.Namespace(checkpoint=str(checkpoint), out=str(out), format=format)
    from ..core.fold import remove
    from ..core.parametrizations import pruned_layers
    from ..training.checkpoint import model_from_checkpoint, save_checkpoint
    from ..training.run_dir import check_out_file, outputs

    out = check_out_file(opts.out)
    src = Path(opts.checkpoint)
    model, meta = model_from_checkpoint(src)
    if opts.format == "onnx":
        with outputs(out.parent, out.name):
            write_onnx(model, meta, out)
        return out
    if not pruned_layers(model):
        raise PofError(f"{src} is not pruned; run `pof prune` first")
    remove(model)
    meta = {k: v for k, v in meta.items() if k in ("arch", "data", "config", "pruned")}
    with outputs(out.parent, out.name):
        out = save_checkpoint(out, model, meta, compact=True)
    size = out.stat().st_size
    dense_size = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    print(f"wrote {out}: {size / 1e6:.2f} MB ({100 * size / dense_size:.0f}% of the "
          f"{dense_size / 1e6:.2f} MB of dense tensors)")
    return out
