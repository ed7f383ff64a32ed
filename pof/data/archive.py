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
    digest,
    make_array_dataset,
    npz_path,
    resolve_split,
    save_npz,
    stats_from_uint8,
)
from .datasets import ARCHIVE_SUFFIXES, CACHE_VERSION, SPLIT_DIRS, ArrayDataset
from .folder import decode_all, is_image_name, probe_images


def is_archive(p: Path) -> bool:
    """Whether ``p`` is named like a tar archive (``.tar``, ``.tar.gz``, ``.tgz``, ...)."""
    return p.name.lower().endswith(ARCHIVE_SUFFIXES)


def archive_stem(p: Path) -> str:
    """``p``'s name without its archive suffix (the data set's name)."""
    n = p.name
    for suf in ARCHIVE_SUFFIXES:
        if n.lower().endswith(suf):
            return n[: -len(suf)]
    return n


def _split_location(parts: Sequence[str]) -> tuple[tuple[str, ...], str, list[str]] | None:
    """(prefix, split, rest) for an archive member inside ``<prefix>/<split>/...``."""
    for i, p in enumerate(parts):
        if p in SPLIT_DIRS and len(parts) - i <= 3:
            return tuple(parts[:i]), p, list(parts[i + 1:])
    return None


def decode_archive(archive: Path, cache: Path, name: str, ident: str, split: str,
                    progress: bool) -> ArrayDataset | None:
    """Decode a small-image ImageFolder archive straight from the tar stream (no extraction),
    caching every split. Returns None when the archive is not one (it is then extracted)."""
    read = _read_image_folder(archive, progress)
    if read is None:
        return None
    prefix, found = read
    s_req = resolve_split(split, list(found), archive)
    plans = _split_plans(archive, prefix, found)
    if plans is None:
        return None
    train_stats = None
    results = {}
    for s in sorted(plans, key=lambda k: k != "train"):  # train first: its stats are shared
        classes, items, labels, mode, size = plans[s]
        images = decode_all(items, mode, size, f"decoding {name}/{s}", progress)
        y = np.asarray(labels, dtype=np.int64)
        if s == "train":
            train_stats = stats_from_uint8(images)
        stats = train_stats if train_stats and len(train_stats[0]) == images.shape[1] else (
            stats_from_uint8(images))
        save_npz(npz_path(cache, name, s, digest(CACHE_VERSION, "folder", ident, s)),
                  images, y, classes, *stats)
        if s == s_req:
            results[s] = make_array_dataset(images, y, classes, *stats, s, str(archive))
        del images
    write_archive_index(cache, name, ident, list(plans), fast=True)
    return results[s_req]


def _read_image_folder(archive: Path, progress: bool):
    """``(prefix, split -> class -> [(file, bytes)])`` of a small-image ImageFolder archive,
    read from the tar stream; None when it is not one."""
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
                    if m.isfile() and (is_image_name(parts[-1]) or not checked_size):
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
                elif m.isfile() and len(rest) == 2 and is_image_name(rest[1]):
                    f = tar.extractfile(m)
                    data = f.read() if f is not None else b""
                    if not checked_size:
                        if not probe_images([(f"{archive}:{m.name}", data)], [0])[2]:
                            return None  # large images: stream from extracted files
                        checked_size = True
                    split_d.setdefault(rest[0], []).append((rest[1], data))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"cannot read archive {archive}: {_one_line(e)}") from None
    if not checked_size:
        return None  # no images in ImageFolder layout (e.g. CIFAR pickles): extract
    return prefix, found


def _split_plans(archive: Path, prefix, found: dict) -> dict | None:
    """Per split: classes, (name, bytes) items, labels, image mode and size; None when the
    images are not small (they are then streamed from extracted files)."""
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
        mode, size, small = probe_images(items, labels)
        if not small:
            return None
        plans[s] = (classes, items, labels, mode, size)
    return plans


def archive_index_path(cache: Path, name: str, ident: str) -> Path:
    """Where the cache records which splits an archive holds."""
    return cache / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{ident[:16]}-splits.json"


def write_archive_index(cache: Path, name: str, ident: str, splits: list[str],
                         fast: bool) -> None:
    """Record an archive's splits and whether they decode from the stream (``fast``)."""
    blob = json.dumps({"splits": sorted(splits), "fast": fast}).encode()
    _atomic_write(archive_index_path(cache, name, ident), lambda f: f.write(blob))


def extract_archive(archive: Path, dest: Path, progress: bool) -> Path:
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
