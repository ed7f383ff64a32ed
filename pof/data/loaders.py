"""Loaders: one epoch of normalised batches, seeded order, sharded like DistributedSampler."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DistributedSampler

from ..errors import DataError
from .cache import mix_seed
from .datasets import ArrayDataset, Dataset, StreamingImageFolder


def _epoch_indices(n: int, shuffle: bool, seed: int, epoch: int,
                   distributed: tuple[int, int] | None) -> Tensor:
    """Epoch order (seeded permutation if ``shuffle``), sharded by ``DistributedSampler``
    (padded by repeating the head so every rank gets the same count)."""
    rank, world = distributed or (0, 1)
    if world < 1 or not 0 <= rank < world:
        raise DataError(f"bad distributed=(rank, world_size): {distributed}")
    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=shuffle,
                                 seed=mix_seed(seed, epoch))
    return torch.tensor(list(sampler), dtype=torch.long)


def _batches(idx: Tensor, batch_size: int, drop_last: bool) -> list[Tensor]:
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    n = len(idx)
    # drop_last drops the ragged tail, but never leaves an epoch with zero batches.
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    return [idx[i: min(i + batch_size, stop)] for i in range(0, stop, batch_size)]


class _EpochLoader:
    """Shared epoch order, sharding and drop-last rules of the two loaders."""

    def __init__(self, ds: Dataset, batch_size: int, train: bool, augment: bool, seed: int,
                 epoch: int, distributed: tuple[int, int] | None, drop_last: bool) -> None:
        self.dataset, self.batch_size, self.train = ds, batch_size, train
        self.augment, self.seed, self.epoch = augment, seed, epoch
        self.distributed, self.drop_last = distributed, drop_last
        self._n = len(self._indices_batches())

    def _indices_batches(self) -> list[Tensor]:
        idx = _epoch_indices(len(self.dataset), self.train, self.seed, self.epoch,
                             self.distributed)
        return _batches(idx, self.batch_size, self.drop_last)

    def __len__(self) -> int:
        return self._n


class InMemoryLoader(_EpochLoader):
    """Batches from an :class:`ArrayDataset`: normalised float32 images, int64 labels.

    Training augmentation (batched, deterministic in seed/epoch/rank): random crop with
    reflect padding ``max(1, H // 8)`` and, for 3-channel data, horizontal flip.
    """

    def __init__(self, ds: ArrayDataset, batch_size: int, train: bool, augment: bool,
                 seed: int, epoch: int, distributed: tuple[int, int] | None,
                 drop_last: bool) -> None:
        super().__init__(ds, batch_size, train, augment, seed, epoch, distributed, drop_last)
        C, H, W = ds.spec.image_size
        self.pad = max(1, min(H, W) // 8)
        self.flip = C == 3

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        ds = self.dataset
        dev = ds.images.device
        mean = torch.tensor(ds.spec.mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
        std = torch.tensor(ds.spec.std, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
        scale, shift = 1.0 / (255.0 * std), -mean / std
        rank = self.distributed[0] if self.distributed else 0
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, rank, 1))
        for b in self._indices_batches():
            b = b.to(dev)
            x = ds.images[b].float().mul_(scale).add_(shift)
            if self.augment:
                x = self._crop(x, g)
                if self.flip:
                    m = (torch.rand(len(b), generator=g) < 0.5).to(dev)
                    x = torch.where(m.view(-1, 1, 1, 1), x.flip(3), x)
            yield x, ds.labels[b]

    def _crop(self, x: Tensor, g: torch.Generator) -> Tensor:
        """Per-sample random translation within reflect padding (two batched gathers)."""
        B, C, H, W = x.shape
        p, dev = self.pad, x.device
        xp = F.pad(x, (p, p, p, p), mode="reflect")
        dy = torch.randint(0, 2 * p + 1, (B,), generator=g).to(dev).view(B, 1, 1, 1)
        dx = torch.randint(0, 2 * p + 1, (B,), generator=g).to(dev).view(B, 1, 1, 1)
        rows = (dy + torch.arange(H, device=dev).view(1, 1, H, 1)).expand(B, C, H, W + 2 * p)
        cols = (dx + torch.arange(W, device=dev).view(1, 1, 1, W)).expand(B, C, H, W)
        return xp.gather(2, rows).gather(3, cols)


class StreamingLoader(_EpochLoader):
    """torch ``DataLoader`` over a :class:`StreamingImageFolder` with the same epoch order,
    sharding and drop-last rules as :class:`InMemoryLoader`; normalises batches."""

    def __init__(self, ds: StreamingImageFolder, batch_size: int, train: bool, augment: bool,
                 seed: int, epoch: int, distributed: tuple[int, int] | None,
                 num_workers: int, drop_last: bool) -> None:
        super().__init__(ds, batch_size, train, augment, seed, epoch, distributed, drop_last)
        self.num_workers = num_workers

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        ds = self.dataset
        view = StreamingImageFolder(ds.samples, ds.spec, ds.split, ds.source,
                                    augment=self.augment,
                                    aug_seed=mix_seed(self.seed, self.epoch, 2))
        dl = torch.utils.data.DataLoader(
            view, batch_sampler=[b.tolist() for b in self._indices_batches()],
            num_workers=self.num_workers,
            persistent_workers=False)
        mean = torch.tensor(ds.spec.mean).view(1, -1, 1, 1)
        std = torch.tensor(ds.spec.std).view(1, -1, 1, 1)
        scale, shift = 1.0 / (255.0 * std), -mean / std
        it = iter(dl)
        while True:
            try:
                x, y = next(it)
            except StopIteration:
                return
            except DataError as e:  # re-raised from a worker with a traceback: keep 1 line
                raise DataError(_worker_msg(e)) from None
            yield x.float().mul_(scale).add_(shift), y


def _worker_msg(e: DataError) -> str:
    """The original one-line message of a DataError re-raised by a DataLoader worker."""
    return " ".join(str(e).rsplit("DataError: ", 1)[-1].split())


def make_loader(ds: Dataset, batch_size: int, train: bool, *, augment: bool | None = None,
                seed: int = 0, epoch: int = 0, distributed: tuple[int, int] | None = None,
                num_workers: int = 0, drop_last: bool | None = None
                ) -> Iterable[tuple[Tensor, Tensor]]:
    """One epoch of ``(float32 images (B,C,H,W) normalised, int64 labels)`` batches.

    ``train`` shuffles (permutation from ``seed``/``epoch``) and, unless ``augment=False``,
    augments; ``drop_last`` defaults to ``train``. ``distributed=(rank, world_size)`` gives
    each rank a disjoint, equal-size shard (padded like ``DistributedSampler``).
    ``num_workers`` only applies to streaming (large-image) datasets. ``len()`` = #batches.
    """
    augment = train if augment is None else augment
    drop_last = train if drop_last is None else drop_last
    if isinstance(ds, ArrayDataset):
        return InMemoryLoader(ds, batch_size, train, augment, seed, epoch, distributed,
                              drop_last)
    if isinstance(ds, StreamingImageFolder):
        return StreamingLoader(ds, batch_size, train, augment, seed, epoch, distributed,
                               num_workers, drop_last)
    raise TypeError(f"make_loader expects a dataset from load_dataset, got {type(ds).__name__}")
