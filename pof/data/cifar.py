"""CIFAR-10/100 python-pickle directories."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..errors import one_line as _one_line
from .cache import cached_stats, digest, make_array_dataset, resolve_split, stats_from_uint8
from .datasets import CACHE_VERSION, ArrayDataset


def is_cifar_dir(p: Path) -> str | None:
    """``"cifar10"`` / ``"cifar100"`` when ``p`` holds the python-pickle CIFAR files, else None."""
    if (p / "data_batch_1").is_file() and (p / "batches.meta").is_file():
        return "cifar10"
    if (p / "train").is_file() and (p / "meta").is_file():
        return "cifar100"
    return None


# The only globals a CIFAR python batch refers to: numpy's array/dtype reconstruction
# (under numpy 1 and 2 module names) and the codec that protocol-2 pickles use for bytes.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds dicts, lists, str/bytes, numbers and numpy arrays only."""

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core") and np.__version__[0] != "1":
            module = module.replace("numpy.core", "numpy._core", 1)
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    """Read one CIFAR python batch with :class:`_CifarUnpickler` (never runs code)."""
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - whatever the bytes are, it is a bad data file
        raise DataError(f"cannot read CIFAR pickle {path}: {_one_line(e)}") from None
    if not isinstance(d, dict):
        raise DataError(f"unexpected CIFAR pickle content in {path}")
    return d


def _cifar_arrays(root: Path, kind: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    if kind == "cifar10":
        files = [root / f"data_batch_{i}" for i in range(1, 6)] if split == "train" else [
            root / "test_batch"]
        label_key = b"labels"
    else:
        files, label_key = [root / split], b"fine_labels"
    xs, ys = [], []
    for f in files:
        if not f.is_file():
            raise DataError(f"missing CIFAR file {f}")
        d = _unpickle(f)
        try:
            x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(d[label_key], dtype=np.int64)
        except (KeyError, ValueError) as e:
            raise DataError(f"malformed CIFAR file {f}: {_one_line(e)}") from None
        if len(x) != len(y):
            raise DataError(f"malformed CIFAR file {f}: {len(x)} images but {len(y)} labels")
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def load_cifar(root: Path, kind: str, split: str, cache: Path) -> ArrayDataset:
    """One split of a CIFAR-10/100 folder (``kind``), statistics cached."""
    avail = ("train", "test")
    s = resolve_split(split, avail, root)
    meta = _unpickle(root / ("batches.meta" if kind == "cifar10" else "meta"))
    names = meta.get(b"label_names" if kind == "cifar10" else b"fine_label_names")
    if not names:
        raise DataError(f"malformed CIFAR meta file in {root}")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    x, y = _cifar_arrays(root, kind, s)
    key = digest(CACHE_VERSION, "cifar", str(root.resolve()),
                [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(root.iterdir())
                 if f.is_file()])
    mean, std = cached_stats(cache, key, lambda: stats_from_uint8(
        x if s == "train" else _cifar_arrays(root, kind, "train")[0]))
    return make_array_dataset(x, y, classes, mean, std, s, str(root))
