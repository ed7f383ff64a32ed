"""IDX files (MNIST / Fashion-MNIST), parsed with numpy."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..errors import one_line as _one_line
from .cache import cached_stats, digest, make_array_dataset, resolve_split, stats_from_uint8
from .datasets import CACHE_VERSION, FASHION_CLASSES, IDX_RE, ArrayDataset

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def idx_files(root: Path) -> dict[tuple[str, str], Path]:
    """IDX files under ``root`` by (``train``/``t10k``, ``images``/``labels``)."""
    out: dict[tuple[str, str], Path] = {}
    for f in sorted(root.iterdir()):
        m = IDX_RE.match(f.name)
        if m and f.is_file():
            out.setdefault((m.group(1), m.group(2)), f)  # prefer .gz-less name (sorted first)
    return out


def _read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped) with numpy."""
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read IDX file {path}: {_one_line(e)}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"not an IDX file (bad magic): {path}")
    ndim = raw[3]
    hdr = 4 + 4 * ndim
    if len(raw) < hdr:
        raise DataError(f"truncated IDX header: {path}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dt = np.dtype(_IDX_DTYPES[raw[2]])
    n = int(np.prod(dims)) if dims else 0
    if len(raw) - hdr != n * dt.itemsize:
        raise DataError(f"IDX file {path} has {len(raw) - hdr} data bytes, header says "
                        f"{n * dt.itemsize} for shape {dims}")
    return np.frombuffer(raw, dtype=dt, count=n, offset=hdr).reshape(dims).copy()


def _idx_split(files: dict, prefix: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    for kind in ("images", "labels"):
        if (prefix, kind) not in files:
            raise DataError(f"missing IDX file {prefix}-{kind}-idx*-ubyte[.gz] in {root}")
    x, y = _read_idx(files[prefix, "images"]), _read_idx(files[prefix, "labels"])
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"IDX shapes do not match in {root}: images {x.shape}, labels {y.shape}")
    if x.dtype != np.uint8:
        x = np.clip(x, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(x), y.astype(np.int64)


def load_idx(root: Path, split: str, cache: Path) -> ArrayDataset:
    """One split of an MNIST-style IDX folder."""
    files = idx_files(root)
    avail = sorted({"train" if p == "train" else "test" for p, _ in files})
    s = resolve_split(split, avail, root)
    x, y = _idx_split(files, "train" if s == "train" else "t10k", root)
    train_labels = y if s == "train" else (
        _read_idx(files["train", "labels"]) if ("train", "labels") in files else y)
    n_cls = int(max(y.max(initial=0), train_labels.max(initial=0))) + 1
    fashion = "fashion" in str(root.resolve()).lower() and n_cls == 10
    classes = list(FASHION_CLASSES) if fashion else [str(i) for i in range(n_cls)]
    key = digest(CACHE_VERSION, "idx", str(root.resolve()),
                [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files.values()])
    has_train = ("train", "images") in files and ("train", "labels") in files
    mean, std = cached_stats(cache, key, lambda: stats_from_uint8(
        x if s == "train" or not has_train else _idx_split(files, "train", root)[0]))
    return make_array_dataset(x, y, classes, mean, std, s, str(root))
