"""scikit-learn's bundled 8x8 digits (offline; the demo's data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .cache import make_array_dataset, resolve_split, stats_from_uint8
from .datasets import ArrayDataset


def load_sklearn_digits(split: str, cache: Path) -> ArrayDataset:
    """One split of scikit-learn's bundled 8x8 digits (a fixed stratified split)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    s = resolve_split(split, ("train", "test"), "digits")
    d = load_digits()
    imgs = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[:, None]
    y = d.target.astype(np.int64)
    tr, te = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=0)
    tr, te = np.sort(tr), np.sort(te)
    mean, std = stats_from_uint8(imgs[tr])
    idx = tr if s == "train" else te
    return make_array_dataset(imgs[idx], y[idx], [str(i) for i in range(10)], mean, std,
                               s, "digits")
