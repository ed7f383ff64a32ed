"""Evaluation: top-1 / top-5 accuracy and loss of a model over a loader."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..errors import DataError, one_line
from ..progress import progress_bar


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[tuple[Tensor, Tensor]],
             device: torch.device | str = "cpu", progress: bool = False) -> dict[str, float]:
    """Top-1 / top-5 accuracy (fractions) and mean cross-entropy over ``loader``, with the
    batches moved to ``device`` (the model must already be there)."""
    was = model.training
    model.eval()
    n = correct1 = correct5 = 0
    loss = 0.0
    with parametrize.cached():
        for x, y in progress_bar(loader, desc="eval", leave=False, show=progress):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            out = model(x).float()
            loss += F.cross_entropy(out, y, reduction="sum").item()
            top = out.topk(min(5, out.shape[1]), dim=1).indices
            correct1 += (top[:, 0] == y).sum().item()
            correct5 += (top == y[:, None]).any(1).sum().item()
            n += len(y)
    model.train(was)
    return {"top1": correct1 / max(n, 1), "top5": correct5 / max(n, 1), "loss": loss / max(n, 1)}


@torch.no_grad()
def check_model_takes(model: nn.Module, ds, what: str, device: torch.device | str = "cpu"
                      ) -> None:
    """One forward pass of two images of ``ds``: a model that cannot take them (e.g.
    3-channel weights on 1-channel images) is a one-line DataError naming ``what``."""
    from ..data import make_loader

    x, _ = next(iter(make_loader(ds, 2, train=False)))
    was = model.training
    model.eval()
    try:
        model(x.to(device))
    except RuntimeError as e:
        raise DataError(f"{what} does not take the images of {ds.source} "
                        f"{tuple(ds.spec.image_size)}: {one_line(e)[:200]}") from None
    finally:
        model.train(was)


def held_out_split(data: str, progress: bool = False, stats=None):
    """The held-out split of ``data``: ``test``, or ``val`` where there is no test split
    (``load_dataset`` maps either name onto whichever exists); ``stats=(mean, std)``
    normalises it as a checkpoint's training data was."""
    from ..data import load_dataset

    return load_dataset(data, "test", progress=progress, stats=stats)
