"""The two data set types: decoded in-memory arrays and streamed large-image folders."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..errors import DataError
from ..errors import one_line as _one_line
from .transforms import random_resized_crop, resize_center_crop

SMALL_MAX = 64  # both H and W <= this: decode once and keep in memory
CROP_SIZE = 224  # streaming (large-image) output size
RESIZE_SIZE = 256  # streaming eval: resize shorter side, then center-crop CROP_SIZE
IMAGE_EXTS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
SPLIT_DIRS = ("train", "val", "test")
CACHE_VERSION = 1
PARALLEL_MIN = 4096  # decode in worker processes from this many images up
IDX_RE = re.compile(r"^(train|t10k)-(images|labels)[-.]idx([13])-ubyte(\.gz)?$")


Stats = tuple[tuple[float, ...], tuple[float, ...]]  # per-channel (mean, std) of x / 255


@dataclass
class DataSpec:
    """What a loaded dataset looks like (image_size is (C, H, W) as fed to the model)."""

    num_classes: int
    classes: list[str]
    image_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]




# --------------------------------------------------------------------------- datasets


@dataclass(eq=False)
class ArrayDataset(torch.utils.data.Dataset):
    """Decoded in-memory dataset: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,).

    Items are raw ``(uint8 image, int label)``; normalisation/augmentation happen batched in
    :func:`make_loader`. ``to(device)`` moves the tensors; the loader then works there.
    """

    images: Tensor
    labels: Tensor
    spec: DataSpec
    split: str = "train"
    source: str = ""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i], int(self.labels[i])

    def to(self, device: torch.device | str) -> ArrayDataset:
        self.images, self.labels = self.images.to(device), self.labels.to(device)
        return self

    def __repr__(self) -> str:
        return (f"ArrayDataset({self.source!r}, split={self.split!r}, n={len(self)}, "
                f"classes={self.spec.num_classes}, size={self.spec.image_size})")


@dataclass(eq=False)
class StreamingImageFolder(torch.utils.data.Dataset):
    """Large-image ImageFolder decoded per item with PIL.

    Items are ``(uint8 (3, 224, 224) tensor, label)``. With ``augment``: random-resized-crop
    224 + horizontal flip, randomness drawn from (``aug_seed``, index) so it is deterministic
    whatever the worker layout; otherwise resize 256 + center-crop 224.
    """

    samples: list[tuple[str, int]]
    spec: DataSpec
    split: str = "train"
    source: str = ""
    augment: bool = False
    aug_seed: int = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except Exception as e:  # PIL raises many types for bad files
            raise DataError(f"corrupt image file {path}: {_one_line(e)}") from None
        if self.augment:
            rng = np.random.default_rng([self.aug_seed, i])
            img = random_resized_crop(img, CROP_SIZE, rng)
            if rng.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        else:
            img = resize_center_crop(img, RESIZE_SIZE, CROP_SIZE)
        arr = np.array(img, dtype=np.uint8)  # H, W, 3 (copy: writable)
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), label

    def __repr__(self) -> str:
        return (f"StreamingImageFolder({self.source!r}, split={self.split!r}, n={len(self)}, "
                f"classes={self.spec.num_classes})")


Dataset = ArrayDataset | StreamingImageFolder
