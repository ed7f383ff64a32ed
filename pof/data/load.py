"""``load_dataset``: find the format of a path or name and read the split asked for."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..errors import DataError
from .archive import (
    archive_index_path,
    archive_stem,
    decode_archive,
    extract_archive,
    is_archive,
    write_archive_index,
)
from .cache import cache_lock, cache_root, digest, load_npz, npz_path, resolve_split
from .cifar import is_cifar_dir, load_cifar
from .datasets import CACHE_VERSION, Dataset, Stats
from .digits import load_sklearn_digits
from .folder import folder_splits, load_folder
from .idx import idx_files, load_idx


def _detect(root: Path, depth: int = 0) -> tuple[str, Path]:
    """Return (format, data root) for a directory; descends through single wrapper dirs."""
    if folder_splits(root):
        return "folder", root
    kind = is_cifar_dir(root)
    if kind:
        return kind, root
    if idx_files(root):
        return "idx", root
    subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    for known in ("cifar-10-batches-py", "cifar-100-python"):
        if (root / known).is_dir():
            return _detect(root / known, depth + 1)
    if len(subdirs) == 1 and depth < 3:
        return _detect(subdirs[0], depth + 1)
    raise DataError(
        f"unrecognised dataset format at {root}: expected ImageFolder (train/val/test "
        "subfolders), a CIFAR python dir, IDX (MNIST) files, or a .tar.gz of one")




def is_builtin(path_or_name: str) -> bool:
    """Whether ``path_or_name`` names a data set that ships with a package (no path)."""
    return str(path_or_name).lower() == "digits"


def load_dataset(path_or_name: str, split: str = "train", cache_dir: str | None = None,
                 progress: bool = True, stats: Stats | None = None) -> Dataset:
    """Load ``split`` of a dataset; raises :class:`DataError` for any data problem.

    Returns an :class:`ArrayDataset` (small images, decoded once and cached under
    ``cache_dir`` / ``$POF_CACHE`` / ``~/.cache/pof``) or a :class:`StreamingImageFolder`.
    Images are normalised with the training split's per-channel mean/std, or with
    ``stats=(mean, std)`` when given (e.g. a checkpoint's): then a held-out split is read
    without decoding the training split for its statistics.
    """
    cache = cache_root(cache_dir)
    if is_builtin(path_or_name):
        ds = load_sklearn_digits(split, cache)
    else:
        path = Path(path_or_name).expanduser()
        if not path.exists():
            raise DataError(f"dataset path does not exist: {path}")
        with cache_lock(cache, digest(str(path.resolve()))):
            ds = _load_path(path, split, cache, progress, stats)
    if stats is not None:
        mean, std = (tuple(float(v) for v in x) for x in stats)
        if len(mean) != ds.spec.image_size[0]:
            raise DataError(f"{path_or_name} has {ds.spec.image_size[0]} channels, the "
                            f"normalisation given has {len(mean)}")
        ds.spec = dataclasses.replace(ds.spec, mean=mean, std=std)
    return ds


def _lone_archive(path: Path) -> Path | None:
    """The one archive in a directory that holds no data folders (a data set shipped as
    a tarball beside its README) — loaded as that archive."""
    if not path.is_dir() or any(p.is_dir() for p in path.iterdir()):
        return None
    archives = [p for p in path.iterdir() if p.is_file() and is_archive(p)]
    return archives[0] if len(archives) == 1 else None


def _load_path(path: Path, split: str, cache: Path, progress: bool,
               stats: Stats | None = None) -> Dataset:
    path = _lone_archive(path) or path
    name, ident = path.resolve().name, None
    if path.is_file():
        if not is_archive(path):
            raise DataError(f"unrecognised dataset format (not a directory or .tar.gz): {path}")
        st = path.stat()
        ident = digest(str(path.resolve()), st.st_size, st.st_mtime_ns)
        name = archive_stem(path)
        index: dict = {}
        try:
            index = json.loads(archive_index_path(cache, name, ident).read_text())
        except (OSError, ValueError):
            pass
        if index.get("splits"):  # fast path: this split of this archive is already decoded
            s = resolve_split(split, index["splits"], path)
            key = digest(CACHE_VERSION, "folder", ident, s)
            if (ds := load_npz(npz_path(cache, name, s, key), s, str(path))) is not None:
                return ds
        if index.get("fast", True):
            ds = decode_archive(path, cache, name, ident, split, progress)
            if ds is not None:
                return ds
        root = extract_archive(path, cache / "extracted" / f"{name}-{ident[:12]}", progress)
        fmt, root = _detect(root)
        if not index:
            splits = folder_splits(root) if fmt == "folder" else []
            write_archive_index(cache, name, ident, splits, fast=False)
    elif path.is_dir():
        fmt, root = _detect(path)
    else:
        raise DataError(f"unrecognised dataset path (not a file or directory): {path}")
    if fmt == "folder":
        return load_folder(root, split, cache, progress, name, ident, norm=stats)
    if fmt in ("cifar10", "cifar100"):
        return load_cifar(root, fmt, split, cache)
    return load_idx(root, split, cache)
