"""ImageFolder directories (``<split>/<class>/<image>``): scan, probe, decode once."""

from __future__ import annotations

import io
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from ..errors import one_line as _one_line
from ..fileio import atomic_write as _atomic_write
from ..progress import progress_bar
from .cache import (
    digest,
    load_npz,
    make_array_dataset,
    npz_path,
    resolve_split,
    save_npz,
    stats_from_uint8,
)
from .datasets import (
    CACHE_VERSION,
    CROP_SIZE,
    IMAGE_EXTS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PARALLEL_MIN,
    SMALL_MAX,
    SPLIT_DIRS,
    ArrayDataset,
    Dataset,
    DataSpec,
    Stats,
    StreamingImageFolder,
)


def is_image_name(name: str) -> bool:
    """Whether ``name`` is a visible file with an image extension."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTS


def folder_splits(root: Path) -> list[str]:
    """The split folders (train, val, test) under ``root``."""
    return [s for s in SPLIT_DIRS if (root / s).is_dir()]


def _scan_split(split_dir: Path) -> tuple[list[str], list[tuple[str, int]], list]:
    """List classes and (file, label) samples; also (relpath, size, mtime) for the cache key."""
    classes = sorted(e.name for e in os.scandir(split_dir)
                     if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(f"empty split {split_dir}: no class folders "
                        "(expected <split>/<class>/<image>)")
    samples: list[tuple[str, int]] = []
    stats: list = []
    for label, c in enumerate(classes):
        cdir = split_dir / c
        entries = sorted((e for e in os.scandir(cdir) if e.is_file() and is_image_name(e.name)),
                         key=lambda e: e.name)
        if not entries:
            raise DataError(f"class folder without images: {cdir}")
        for e in entries:
            st = e.stat()
            samples.append((e.path, label))
            stats.append((f"{c}/{e.name}", st.st_size, st.st_mtime_ns))
    return classes, samples, stats


def _open_src(src: str | bytes) -> Image.Image:
    return Image.open(io.BytesIO(src) if isinstance(src, bytes) else src)


def probe_images(items: Sequence[tuple[str, str | bytes]], labels: Sequence[int]
           ) -> tuple[str, tuple[int, int], bool]:
    """Mode ('L' or 'RGB'), size (W, H) of the first image, and whether all probed images
    are small; reads the headers of the first image of each class (up to 64 classes)."""
    seen: set[int] = set()
    probes = []
    for item, lab in zip(items, labels, strict=True):
        if lab not in seen:
            seen.add(lab)
            probes.append(item)
    mode, size, small = "L", None, True
    for name, src in probes[:64]:
        try:
            with _open_src(src) as im:
                size = size or im.size
                if im.mode not in ("1", "L", "LA", "I", "I;16", "F"):
                    mode = "RGB"
                small = small and max(im.size) <= SMALL_MAX
        except Exception as e:
            raise DataError(f"corrupt image file {name}: {_one_line(e)}") from None
    assert size is not None
    return mode, size, small


def _decode_image(src: str | bytes, mode: str, size: tuple[int, int]) -> np.ndarray:
    """Decode one image to uint8 (C, H, W) in ``mode``, resized to ``size`` (W, H) if needed."""
    with _open_src(src) as im:
        img = im.convert(mode)
    if img.size != size:
        img = img.resize(size, Image.Resampling.BILINEAR)
    a = np.asarray(img, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _decode_chunk(items: Sequence[tuple[str, str | bytes]], mode: str,
                  size: tuple[int, int]) -> np.ndarray:
    out = np.empty((len(items), 1 if mode == "L" else 3, size[1], size[0]), dtype=np.uint8)
    for i, (name, src) in enumerate(items):
        try:
            out[i] = _decode_image(src, mode, size)
        except Exception as e:  # PIL raises many types for bad files
            raise DataError(f"corrupt image file {name}: {_one_line(e)}") from None
    return out


def _n_procs() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    return max(1, min(16, n))


def decode_all(items: Sequence[tuple[str, str | bytes]], mode: str, size: tuple[int, int],
                desc: str, progress: bool) -> np.ndarray:
    """Decode (name, path-or-bytes) items into uint8 (N, C, H, W); processes for big sets
    (JPEG header parsing is GIL-bound, so threads do not help)."""
    out = np.empty((len(items), 1 if mode == "L" else 3, size[1], size[0]), dtype=np.uint8)
    chunk = 1024
    starts = range(0, len(items), chunk)
    procs = _n_procs()
    with progress_bar(total=len(items), desc=desc, unit="img", show=progress,
              leave=False) as bar:
        if len(items) < PARALLEL_MIN or procs < 2:
            for a in starts:
                out[a: a + chunk] = _decode_chunk(items[a: a + chunk], mode, size)
                bar.update(min(chunk, len(items) - a))
            return out
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
        pool = ProcessPoolExecutor(procs, mp_context=ctx)
        try:
            futs = {pool.submit(_decode_chunk, items[a: a + chunk], mode, size): a
                    for a in starts}
            for f in as_completed(futs):
                r = f.result()
                out[futs[f]: futs[f] + len(r)] = r
                bar.update(len(r))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return out




def _header_ok(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            h = f.read(16)
    except OSError:
        return False
    return (h[:3] == b"\xff\xd8\xff" or h[:8] == b"\x89PNG\r\n\x1a\n" or h[:6] in (
        b"GIF87a", b"GIF89a") or h[:2] == b"BM" or (h[:4] == b"RIFF" and h[8:12] == b"WEBP")
        or h[:4] in (b"II*\x00", b"MM\x00*") or (len(h) > 2 and h[0:1] == b"P"
                                                 and h[1:2] in b"123456"))


def _check_headers(samples: list[tuple[str, int]], marker: Path, progress: bool) -> None:
    """Cheap corruption check for streamed datasets: magic bytes of every file (once)."""
    if marker.exists():
        return
    paths = [p for p, _ in samples]
    with ThreadPoolExecutor(16) as pool:
        oks = list(progress_bar(pool.map(_header_ok, paths, chunksize=256),
                                total=len(paths), desc="checking image headers", unit="img",
                                show=progress, leave=False))
    for p, ok in zip(paths, oks, strict=True):
        if not ok:
            raise DataError(f"corrupt image file {p}: not a recognised image header")
    _atomic_write(marker, lambda f: f.write(b"ok\n"))


def load_folder(root: Path, split: str, cache: Path, progress: bool, name: str,
                 ident: str | None = None, _for_stats: bool = False,
                 norm: Stats | None = None) -> Dataset:
    """ImageFolder split. ``ident`` (archive identity) replaces the file-list cache key.
    With ``norm`` (mean, std) a held-out split is not normalised by (nor cached with) the statistics
    of the training split, which then need not be decoded."""
    s = resolve_split(split, folder_splits(root), root)
    key = digest(CACHE_VERSION, "folder", ident, s) if ident else None
    if key is not None and (ds := load_npz(npz_path(cache, name, s, key), s, str(root))):
        return ds
    split_dir = root / s
    classes, samples, stats = _scan_split(split_dir)
    if key is None:
        key = digest(CACHE_VERSION, "folder", str(split_dir.resolve()), s, stats)
    items = [(p, p) for p, _ in samples]
    mode, size, small = probe_images(items, [lab for _, lab in samples])
    if not small:
        if _for_stats:
            return None  # type: ignore[return-value]
        _check_headers(samples, cache / f"verified-{name}-{s}-{key[:16]}", progress)
        spec = DataSpec(len(classes), classes, (3, CROP_SIZE, CROP_SIZE), IMAGENET_MEAN,
                        IMAGENET_STD)
        return StreamingImageFolder(samples, spec, s, str(root))
    npz = npz_path(cache, name, s, key)
    if (ds := load_npz(npz, s, str(root))) is not None:
        return ds
    images = decode_all(items, mode, size, f"decoding {name}/{s}", progress)
    labels = np.fromiter((lab for _, lab in samples), dtype=np.int64, count=len(samples))
    mean, std = None, None
    if s != "train" and "train" in folder_splits(root):
        if norm is not None:  # not cached: these statistics came from the caller
            return make_array_dataset(images, labels, classes, *norm, s, str(root))
        tr = load_folder(root, "train", cache, progress, name, ident, _for_stats=True)
        if isinstance(tr, ArrayDataset) and tr.spec.image_size[0] == images.shape[1]:
            mean, std = tr.spec.mean, tr.spec.std
    if mean is None:
        mean, std = stats_from_uint8(images)
    save_npz(npz, images, labels, classes, mean, std)
    return make_array_dataset(images, labels, classes, mean, std, s, str(root))
