"""Steps the deploy workflows share: load a checkpoint on a device, an evaluator and a
BatchNorm re-estimator on its data, checks, an example input, the ONNX file."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DataError, PofError
from .data_rule import stats


def num_classes(meta: dict) -> int:
    return int(meta["arch"]["num_classes"])


def load_on(ckpt: str, device: str):
    """``(model, metadata)`` of a checkpoint, the model on ``device`` (checked first)."""
    from ..training.checkpoint import model_from_checkpoint
    from ..training.distributed import pick_device

    dev = pick_device(device)
    model, meta = model_from_checkpoint(ckpt)
    return model.to(dev), meta


def evaluator(model, data: str, batch: int, meta: dict, ckpt: str
               ) -> Callable[[Any], dict[str, float]]:
    """``model -> metrics`` on ``data``'s held-out split (on the model's device), normalised
    as the checkpoint's training data was, checked against the model first."""
    from ..core.model_info import model_device
    from ..data import make_loader
    from ..training.evaluate import check_model_takes, evaluate, held_out_split

    classes = num_classes(meta)
    ds = held_out_split(data, True, stats(meta, ckpt))
    if ds.spec.num_classes != classes:
        raise DataError(f"{data} has {ds.spec.num_classes} classes but {ckpt} was trained "
                        f"for {classes}")
    dev = model_device(model)
    check_model_takes(model, ds, f"the model of {ckpt}", dev)
    loader = make_loader(ds, batch, train=False)
    return lambda m: evaluate(m, loader, dev)


RECAL_BATCH = 128  # `--bn-recal N` means N batches of this many images, in prune and sweep


def recalibrator(model, data: str, batches: int, meta: dict, ckpt: str
                  ) -> Callable[[Any], object]:
    """``model -> None``: BatchNorm recalibration on ``batches`` unaugmented training batches
    of RECAL_BATCH images (on the model's device), normalised as the checkpoint's training
    data was; ``model`` is checked to take the images first."""
    from ..core.bn_recal import recalibrate_bn
    from ..core.model_info import model_device
    from ..data import load_dataset, make_loader
    from ..training.evaluate import check_model_takes

    ds = load_dataset(data, "train", progress=True, stats=stats(meta, ckpt))
    check_model_takes(model, ds, f"the model of {ckpt}", model_device(model))
    return lambda model: recalibrate_bn(
        model, make_loader(ds, RECAL_BATCH, train=True, augment=False, seed=0), batches)


def check_bn_recal(model, args: argparse.Namespace, ckpt: str) -> None:
    """``--bn-recal`` needs BatchNorm layers: say so before any work."""
    from ..core.bn_recal import batchnorms

    if args.bn_recal and not batchnorms(model):
        raise PofError(f"--bn-recal: {ckpt} has no BatchNorm layers to re-estimate")


def not_folded(ckpt: str, model) -> None:
    from ..core.folded import is_folded

    if any(is_folded(m) for m in model.modules()):
        raise PofError(f"{ckpt} is already pruned permanently (--permanent / export); prune "
                       "the checkpoint it came from instead")


def example_input(meta: dict):
    """A zero batch of one input of the checkpoint's image size."""
    import torch

    from ..models import default_input_size

    size = (meta.get("data") or {}).get("image_size")
    return torch.zeros(1, *(size or default_input_size(meta["arch"]["name"])))


def write_onnx(model, meta: dict, path: Path) -> None:
    from ..export.onnx import deploy_metadata, export_onnx, plain_for_export

    plain_for_export(model)  # as exported: the parameter count the metadata gives
    err = export_onnx(model, path, example_input(meta),
                      metadata=deploy_metadata(meta, model))
    print(f"wrote {path}: {path.stat().st_size / 1e6:.2f} MB ONNX; onnxruntime matches "
          f"PyTorch to {err:.1e}")
