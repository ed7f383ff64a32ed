"""Tar archives of a data set: decoded straight from the stream, or extracted once."""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..errors import one_line as _one_line
from ..fileio import atomic_write as _atomic_write
from ..progress import progress_bar
from .cache import (
    _hash,
    _make_array_dataset,
    _npz_path,
    _resolve_split,
    _save_npz,
    _stats_from_uint8,
)
from .datasets import _CACHE_VERSION, _SPLIT_DIRS, ARCHIVE_SUFFIXES, ArrayDataset
from .folder import _decode_all, _is_image_name, _probe


def _is_archive(p: Path) -> bool:
    return p.name.lower().endswith(ARCHIVE_SUFFIXES)


def _archive_stem(p: Path) -> str:
    n = p.name
    for suf in ARCHIVE_SUFFIXES:
        if n.lower().endswith(suf):
            return n[: -len(suf)]
    return n


def _split_location(parts: Sequence[str]) -> tuple[tuple[str, ...], str, list[str]] | None:
    """(prefix, split, rest) for an archive member inside ``<prefix>/<split>/...``."""
    for i, p in enumerate(parts):
        if p in _SPLIT_DIRS and len(parts) - i <= 3:
            return tuple(parts[:i]), p, list(parts[i + 1:])
    return None


def _decode_archive(archive: Path, cache: Path, name: str, ident: str, split: str,
                    progress: bool) -> ArrayDataset | None:
    """Decode a small-image ImageFolder archive straight from the tar stream (no extraction),
    caching every split. Returns None when the archive is not one (it is then extracted)."""
    prefix: tuple[str, ...] | None = None
    found: dict[str, dict[str, list[tuple[str, bytes]]]] = {}  # split -> class -> files
    checked_size = False
    try:
        with tarfile.open(archive, "r:*") as tar:
            for m in progress_bar(tar, desc=f"reading {archive.name}", unit="file",
                                  show=progress, leave=False):
                parts = [p for p in m.name.split("/") if p not in ("", ".")]
                if not parts or any(p.startswith(".") for p in parts):
                    continue
                loc = _split_location(parts) if (m.isdir() or m.isfile()) else None
                if loc is None:
                    if m.isfile() and (_is_image_name(parts[-1]) or not checked_size):
                        # images outside <split>/<class>/, or other files before any image
                        # (CIFAR pickles): stop reading here and let extraction decide
                        return None
                    continue
                if prefix is None:
                    prefix = loc[0]
                elif loc[0] != prefix:
                    return None
                split_d = found.setdefault(loc[1], {})
                rest = loc[2]
                if m.isdir() and len(rest) == 1:
                    split_d.setdefault(rest[0], [])
                elif m.isfile() and len(rest) == 2 and _is_image_name(rest[1]):
                    f = tar.extractfile(m)
                    data = f.read() if f is not None else b""
                    member = f"{archive}:{m.name}"
                    if not checked_size:
                        if not _probe([(member, data)], [0])[2]:
                            return None  # large images: stream from extracted files
                        checked_size = True
                    split_d.setdefault(rest[0], []).append((rest[1], data))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"cannot read archive {archive}: {_one_line(e)}") from None
    if not checked_size:
        return None  # no images in ImageFolder layout (e.g. CIFAR pickles): extract
    s_req = _resolve_split(split, list(found), archive)
    base = "/".join(prefix or ())
    plans = {}
    for s, cls_files in sorted(found.items()):
        where = f"{archive}:{base + '/' if base else ''}{s}"
        classes = sorted(cls_files)
        if not classes:
            raise DataError(f"empty split {where}: no class folders "
                            "(expected <split>/<class>/<image>)")
        items, labels = [], []
        for lab, c in enumerate(classes):
            if not cls_files[c]:
                raise DataError(f"class folder without images: {where}/{c}")
            for fname, data in sorted(cls_files[c]):
                items.append((f"{where}/{c}/{fname}", data))
                labels.append(lab)
        mode, size, small = _probe(items, labels)
        if not small:
            return None
        plans[s] = (classes, items, labels, mode, size)
    train_stats = None
    results = {}
    for s in sorted(plans, key=lambda k: k != "train"):  # train first: its stats are shared
        classes, items, labels, mode, size = plans[s]
        images = _decode_all(items, mode, size, f"decoding {name}/{s}", progress)
        y = np.asarray(labels, dtype=np.int64)
        if s == "train":
            train_stats = _stats_from_uint8(images)
        stats = train_stats if train_stats and len(train_stats[0]) == images.shape[1] else (
            _stats_from_uint8(images))
        _save_npz(_npz_path(cache, name, s, _hash(_CACHE_VERSION, "folder", ident, s)),
                  images, y, classes, *stats)
        if s == s_req:
            results[s] = _make_array_dataset(images, y, classes, *stats, s, str(archive))
        del images
    _write_archive_index(cache, name, ident, list(plans), fast=True)
    return results[s_req]


def _archive_index_path(cache: Path, name: str, ident: str) -> Path:
    return cache / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{ident[:16]}-splits.json"


def _write_archive_index(cache: Path, name: str, ident: str, splits: list[str],
                         fast: bool) -> None:
    blob = json.dumps({"splits": sorted(splits), "fast": fast}).encode()
    _atomic_write(_archive_index_path(cache, name, ident), lambda f: f.write(blob))


def _extract(archive: Path, dest: Path, progress: bool) -> Path:
    """Extract ``archive`` into ``dest`` once (atomic rename; safe for concurrent ranks)."""
    done = dest / ".pof-complete"
    if done.exists():
        return dest
    if dest.exists():
        shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()  # default permissions (umask applies), unlike mkdtemp's 0700
    kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for m in progress_bar(tar, desc=f"extracting {archive.name}", unit="file",
                                  show=progress, leave=False):
                if not kw and (m.name.startswith("/") or ".." in Path(m.name).parts
                               or not (m.isfile() or m.isdir())):
                    continue
                tar.extract(m, tmp, **kw)
        done_tmp = tmp / ".pof-complete"
        done_tmp.touch()
        try:
            os.rename(tmp, dest)
        except OSError:
            if not done.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"cannot extract archive {archive}: {_one_line(e)}") from None
    return dest
