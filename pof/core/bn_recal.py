"""BatchNorm recalibration: re-estimate running statistics after pruning, no weight updates.

Pruning shifts each channel's pre-normalisation mean and variance, while BatchNorm still
applies the dense model's running statistics. Forwarding a few hundred unlabelled training
images in train mode, with gradients off, re-estimates them; no weight changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..errors import PofError
from .model_info import model_device

BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


def batchnorms(model: nn.Module) -> list[nn.Module]:
    """BatchNorm modules of ``model`` that keep running statistics."""
    return [m for m in model.modules()
            if isinstance(m, BN_TYPES) and m.track_running_stats and m.running_mean is not None]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable, num_batches: int | None = None,
                   device: torch.device | str | None = None) -> int:
    """Re-estimate every BatchNorm's running mean/var from ``batches``; returns images seen.

    ``batches`` yields input tensors or ``(inputs, labels)`` pairs; at most ``num_batches``
    are used. Statistics are a plain average over them (``momentum=None``). Only the
    BatchNorm modules run in train mode (dropout and the rest stay in eval mode); the
    model's modes and BatchNorm momenta are restored afterwards. Batches go to ``device``
    (default: the model's device).
    """
    device = model_device(model) if device is None else device
    bns = batchnorms(model)
    if not bns:
        raise PofError("model has no BatchNorm layers with running statistics to recalibrate")
    if num_batches is not None and num_batches < 1:
        raise PofError(f"num_batches must be >= 1, got {num_batches}")
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in bns}
    seen = 0
    try:
        model.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with parametrize.cached():
            for i, batch in enumerate(batches):
                if num_batches is not None and i >= num_batches:
                    break
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(x.to(device, non_blocking=True))
                seen += len(x)
    finally:
        for m, training in modes.items():
            m.training = training
        for m, momentum in momenta.items():
            m.momentum = momentum
    if seen == 0:
        raise PofError("no batches given to recalibrate BatchNorm statistics")
    return seen


@contextmanager
def preserved_bn_stats(model: nn.Module) -> Iterator[None]:
    """Restore every BatchNorm's running statistics on exit (e.g. around a trial prune)."""
    saved: list[tuple[nn.Module, dict[str, Tensor]]] = [
        (m, {k: v.clone() for k, v in m.named_buffers(recurse=False) if v is not None})
        for m in batchnorms(model)]
    try:
        yield
    finally:
        for m, bufs in saved:
            for k, v in bufs.items():
                getattr(m, k).copy_(v)
