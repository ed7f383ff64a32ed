"""PIL transforms for streamed large images (torchvision-style, deterministic rng)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def random_resized_crop(img: Image.Image, size: int, rng: np.random.Generator,
                         scale: tuple[float, float] = (0.08, 1.0),
                         ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Image.Image:
    """torchvision-style RandomResizedCrop on a PIL image (bilinear)."""
    W, H = img.size
    area = W * H
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ar = math.exp(rng.uniform(*log_r))
        w = int(round(math.sqrt(target * ar)))
        h = int(round(math.sqrt(target / ar)))
        if 0 < w <= W and 0 < h <= H:
            top = int(rng.integers(0, H - h + 1))
            left = int(rng.integers(0, W - w + 1))
            break
    else:  # fallback: central crop with the ratio clamped
        in_ratio = W / H
        if in_ratio < ratio[0]:
            w, h = W, int(round(W / ratio[0]))
        elif in_ratio > ratio[1]:
            h, w = H, int(round(H * ratio[1]))
        else:
            w, h = W, H
        top, left = (H - h) // 2, (W - w) // 2
    return img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))


def resize_center_crop(img: Image.Image, resize: int, crop: int) -> Image.Image:
    """Resize the shorter side to ``resize`` then take the central ``crop`` square."""
    W, H = img.size
    s = resize / min(W, H)
    nw, nh = max(crop, int(round(W * s))), max(crop, int(round(H * s)))
    img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - crop) // 2, (nh - crop) // 2
    return img.crop((left, top, left + crop, top + crop))
