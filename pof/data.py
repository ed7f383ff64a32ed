"""Datasets and loaders.

Formats are detected from ``path_or_name``: ``"digits"`` (scikit-learn), an ImageFolder
directory (``<root>/{train,val,test}/<class>/<image>``), a tar archive of one, a CIFAR-10/100
python-pickle directory, or an IDX (MNIST / Fashion-MNIST) directory.

Small images (H, W <= 64) are decoded once into a uint8 N×C×H×W array, cached as ``.npz`` and
served by an in-memory loader that augments whole batches on tensors (airbench style).
Larger images stream from disk through a torch ``DataLoader`` with PIL transforms.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import math
import multiprocessing
import os
import pickle
import re
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

__all__ = [
    "DataSpec",
    "DataError",
    "ArrayDataset",
    "StreamingImageFolder",
    "load_dataset",
    "make_loader",
]

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
_SPLIT_DIRS = ("train", "val", "test")
_CACHE_VERSION = 1
_PARALLEL_MIN = 4096  # decode in worker processes from this many images up
_IDX_RE = re.compile(r"^(train|t10k)-(images|labels)[-.]idx([13])-ubyte(\.gz)?$")


@dataclass
class DataSpec:
    """What a loaded dataset looks like (image_size is (C, H, W) as fed to the model)."""

    num_classes: int
    classes: list[str]
    image_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]


class DataError(ValueError):
    """User-facing data problem; message is one line naming the path."""

    def __init__(self, msg: object) -> None:
        super().__init__(" ".join(str(msg).splitlines()))


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
            img = _random_resized_crop(img, CROP_SIZE, rng)
            if rng.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        else:
            img = _resize_center_crop(img, RESIZE_SIZE, CROP_SIZE)
        arr = np.array(img, dtype=np.uint8)  # H, W, 3 (copy: writable)
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), label

    def __repr__(self) -> str:
        return (f"StreamingImageFolder({self.source!r}, split={self.split!r}, n={len(self)}, "
                f"classes={self.spec.num_classes})")


Dataset = ArrayDataset | StreamingImageFolder


def _random_resized_crop(img: Image.Image, size: int, rng: np.random.Generator,
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


def _resize_center_crop(img: Image.Image, resize: int, crop: int) -> Image.Image:
    """Resize the shorter side to ``resize`` then take the central ``crop`` square."""
    W, H = img.size
    s = resize / min(W, H)
    nw, nh = max(crop, int(round(W * s))), max(crop, int(round(H * s)))
    img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - crop) // 2, (nh - crop) // 2
    return img.crop((left, top, left + crop, top + crop))


# --------------------------------------------------------------------------- helpers


def _one_line(e: BaseException | str) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def _mix(*ints: int) -> int:
    """Well-mixed 63-bit seed from integers (seed, epoch, ...)."""
    ss = np.random.SeedSequence([int(x) & 0xFFFFFFFFFFFFFFFF for x in ints])
    return int(ss.generate_state(1, dtype=np.uint64)[0]) & 0x7FFFFFFFFFFFFFFF


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    root = Path(cache_dir or os.environ.get("POF_CACHE") or "~/.cache/pof").expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create cache dir {root}: {_one_line(e)} "
                        "(set POF_CACHE or pass cache_dir)") from None
    return root


def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _stats_from_uint8(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean/std (of x/255) via 256-bin histograms (no float copy)."""
    means, stds = [], []
    v = np.arange(256, dtype=np.float64) / 255.0
    for c in range(images.shape[1]):
        h = np.bincount(np.ascontiguousarray(images[:, c]).reshape(-1), minlength=256)
        n = max(int(h.sum()), 1)
        m = float((h * v).sum() / n)
        var = float((h * (v - m) ** 2).sum() / n)
        means.append(round(m, 6))
        stds.append(round(max(math.sqrt(var), 1e-6), 6))
    return tuple(means), tuple(stds)


def _resolve_split(split: str, available: Sequence[str], where: Path | str) -> str:
    """Map a requested split onto an available one ("val" and "test" accept each other)."""
    s = split.lower()
    alias = {"val": ("val", "test"), "test": ("test", "val"), "validation": ("val", "test")}
    for cand in alias.get(s, (s,)):
        if cand in available:
            return cand
    found = ", ".join(sorted(available)) or "none"
    raise DataError(f"unknown split {split!r} for {where}; splits found: {found}")


def _make_array_dataset(images: np.ndarray, labels: np.ndarray, classes: list[str],
                        mean: Sequence[float], std: Sequence[float], split: str,
                        source: str) -> ArrayDataset:
    spec = DataSpec(num_classes=len(classes), classes=list(classes),
                    image_size=tuple(int(s) for s in images.shape[1:]),
                    mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))
    return ArrayDataset(torch.from_numpy(np.ascontiguousarray(images)),
                        torch.from_numpy(np.asarray(labels, dtype=np.int64)), spec, split, source)


def _cached_stats(cache: Path, key: str, compute) -> tuple[tuple, tuple]:
    """Train-split mean/std, stored once as JSON in the cache."""
    path = cache / f"stats-{key[:16]}.json"
    try:
        d = json.loads(path.read_text())
        return tuple(d["mean"]), tuple(d["std"])
    except (OSError, ValueError, KeyError):
        pass
    mean, std = compute()
    _atomic_write(path, lambda f: f.write(json.dumps({"mean": mean, "std": std}).encode()))
    return mean, std


# --------------------------------------------------------------------------- digits


def _load_digits(split: str, cache: Path) -> ArrayDataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    s = _resolve_split(split, ("train", "test"), "digits")
    d = load_digits()
    imgs = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[:, None]
    y = d.target.astype(np.int64)
    tr, te = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=0)
    tr, te = np.sort(tr), np.sort(te)
    mean, std = _stats_from_uint8(imgs[tr])
    idx = tr if s == "train" else te
    return _make_array_dataset(imgs[idx], y[idx], [str(i) for i in range(10)], mean, std,
                               s, "digits")


# --------------------------------------------------------------------------- CIFAR pickles


def _is_cifar_dir(p: Path) -> str | None:
    if (p / "data_batch_1").is_file() and (p / "batches.meta").is_file():
        return "cifar10"
    if (p / "train").is_file() and (p / "meta").is_file():
        return "cifar100"
    return None


def _unpickle(path: Path) -> dict:
    # pickle is how the CIFAR python format is defined; only these known files are read.
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except Exception as e:
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


def _load_cifar(root: Path, kind: str, split: str, cache: Path) -> ArrayDataset:
    avail = ("train", "test")
    s = _resolve_split(split, avail, root)
    meta = _unpickle(root / ("batches.meta" if kind == "cifar10" else "meta"))
    names = meta.get(b"label_names" if kind == "cifar10" else b"fine_label_names")
    if not names:
        raise DataError(f"malformed CIFAR meta file in {root}")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    x, y = _cifar_arrays(root, kind, s)
    key = _hash(_CACHE_VERSION, "cifar", str(root.resolve()),
                [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(root.iterdir())
                 if f.is_file()])
    mean, std = _cached_stats(cache, key, lambda: _stats_from_uint8(
        x if s == "train" else _cifar_arrays(root, kind, "train")[0]))
    return _make_array_dataset(x, y, classes, mean, std, s, str(root))


# --------------------------------------------------------------------------- IDX (MNIST)

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _idx_files(root: Path) -> dict[tuple[str, str], Path]:
    out: dict[tuple[str, str], Path] = {}
    for f in sorted(root.iterdir()):
        m = _IDX_RE.match(f.name)
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


def _load_idx(root: Path, split: str, cache: Path) -> ArrayDataset:
    files = _idx_files(root)
    avail = sorted({"train" if p == "train" else "test" for p, _ in files})
    s = _resolve_split(split, avail, root)
    x, y = _idx_split(files, "train" if s == "train" else "t10k", root)
    train_labels = y if s == "train" else (
        _read_idx(files["train", "labels"]) if ("train", "labels") in files else y)
    n_cls = int(max(y.max(initial=0), train_labels.max(initial=0))) + 1
    fashion = "fashion" in str(root.resolve()).lower() and n_cls == 10
    classes = list(FASHION_CLASSES) if fashion else [str(i) for i in range(n_cls)]
    key = _hash(_CACHE_VERSION, "idx", str(root.resolve()),
                [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files.values()])
    has_train = ("train", "images") in files and ("train", "labels") in files
    mean, std = _cached_stats(cache, key, lambda: _stats_from_uint8(
        x if s == "train" or not has_train else _idx_split(files, "train", root)[0]))
    return _make_array_dataset(x, y, classes, mean, std, s, str(root))


# --------------------------------------------------------------------------- ImageFolder


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTS


def _folder_splits(root: Path) -> list[str]:
    return [s for s in _SPLIT_DIRS if (root / s).is_dir()]


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
        entries = sorted((e for e in os.scandir(cdir) if e.is_file() and _is_image_name(e.name)),
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


def _probe(items: Sequence[tuple[str, str | bytes]], labels: Sequence[int]
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


def _decode_all(items: Sequence[tuple[str, str | bytes]], mode: str, size: tuple[int, int],
                desc: str, progress: bool) -> np.ndarray:
    """Decode (name, path-or-bytes) items into uint8 (N, C, H, W); processes for big sets
    (JPEG header parsing is GIL-bound, so threads do not help)."""
    out = np.empty((len(items), 1 if mode == "L" else 3, size[1], size[0]), dtype=np.uint8)
    chunk = 1024
    starts = range(0, len(items), chunk)
    procs = _n_procs()
    with tqdm(total=len(items), desc=desc, unit="img", disable=not progress,
              leave=False) as bar:
        if len(items) < _PARALLEL_MIN or procs < 2:
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


def _npz_path(cache: Path, name: str, split: str, key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "data"
    return cache / f"{safe}-{split}-{key[:16]}.npz"


def _load_npz(path: Path, split: str, source: str) -> ArrayDataset | None:
    try:
        with np.load(path, allow_pickle=False) as d:
            return _make_array_dataset(d["images"], d["labels"], [str(c) for c in d["classes"]],
                                       d["mean"], d["std"], split, source)
    except FileNotFoundError:
        return None
    except Exception:  # damaged cache: rebuild it
        path.unlink(missing_ok=True)
        return None


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
        oks = list(tqdm(pool.map(_header_ok, paths, chunksize=256), total=len(paths),
                        desc="checking image headers", unit="img", disable=not progress,
                        leave=False))
    for p, ok in zip(paths, oks, strict=True):
        if not ok:
            raise DataError(f"corrupt image file {p}: not a recognised image header")
    _atomic_write(marker, lambda f: f.write(b"ok\n"))


def _load_folder(root: Path, split: str, cache: Path, progress: bool, name: str,
                 ident: str | None = None, _for_stats: bool = False) -> Dataset:
    """ImageFolder split. ``ident`` (archive identity) replaces the file-list cache key."""
    s = _resolve_split(split, _folder_splits(root), root)
    key = _hash(_CACHE_VERSION, "folder", ident, s) if ident else None
    if key is not None and (ds := _load_npz(_npz_path(cache, name, s, key), s, str(root))):
        return ds
    split_dir = root / s
    classes, samples, stats = _scan_split(split_dir)
    if key is None:
        key = _hash(_CACHE_VERSION, "folder", str(split_dir.resolve()), s, stats)
    items = [(p, p) for p, _ in samples]
    mode, size, small = _probe(items, [lab for _, lab in samples])
    if not small:
        if _for_stats:
            return None  # type: ignore[return-value]
        _check_headers(samples, cache / f"verified-{name}-{s}-{key[:16]}", progress)
        spec = DataSpec(len(classes), classes, (3, CROP_SIZE, CROP_SIZE), IMAGENET_MEAN,
                        IMAGENET_STD)
        return StreamingImageFolder(samples, spec, s, str(root))
    npz = _npz_path(cache, name, s, key)
    if (ds := _load_npz(npz, s, str(root))) is not None:
        return ds
    images = _decode_all(items, mode, size, f"decoding {name}/{s}", progress)
    labels = np.fromiter((lab for _, lab in samples), dtype=np.int64, count=len(samples))
    mean, std = None, None
    if s != "train" and "train" in _folder_splits(root):
        tr = _load_folder(root, "train", cache, progress, name, ident, _for_stats=True)
        if isinstance(tr, ArrayDataset) and tr.spec.image_size[0] == images.shape[1]:
            mean, std = tr.spec.mean, tr.spec.std
    if mean is None:
        mean, std = _stats_from_uint8(images)
    _save_npz(npz, images, labels, classes, mean, std)
    return _make_array_dataset(images, labels, classes, mean, std, s, str(root))


def _save_npz(path: Path, images: np.ndarray, labels: np.ndarray, classes: list[str],
              mean: Sequence[float], std: Sequence[float]) -> None:
    arrays = dict(images=images, labels=labels, classes=np.array(classes), mean=np.array(mean),
                  std=np.array(std))
    _atomic_write(path, lambda f: np.savez(f, **arrays))


# --------------------------------------------------------------------------- archives


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
            for m in tqdm(tar, desc=f"reading {archive.name}", unit="file",
                          disable=not progress, leave=False):
                parts = [p for p in m.name.split("/") if p not in ("", ".")]
                if not parts or any(p.startswith(".") for p in parts):
                    continue
                loc = _split_location(parts) if (m.isdir() or m.isfile()) else None
                if loc is None:
                    if m.isfile() and _is_image_name(parts[-1]):
                        return None  # images outside <split>/<class>/: let extraction decide
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
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".tmp", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for m in tqdm(tar, desc=f"extracting {archive.name}", unit="file",
                          disable=not progress, leave=False):
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


# --------------------------------------------------------------------------- detection


def _detect(root: Path, depth: int = 0) -> tuple[str, Path]:
    """Return (format, data root) for a directory; descends through single wrapper dirs."""
    if _folder_splits(root):
        return "folder", root
    kind = _is_cifar_dir(root)
    if kind:
        return kind, root
    if _idx_files(root):
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


@contextlib.contextmanager
def _cache_lock(cache: Path, key: str) -> Iterator[None]:
    """Inter-process lock so concurrent ranks decode a dataset once (no-op without fcntl)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(cache / f".lock-{key[:16]}", "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def load_dataset(path_or_name: str, split: str = "train", cache_dir: str | None = None,
                 progress: bool = True) -> Dataset:
    """Load ``split`` of a dataset; raises :class:`DataError` for any data problem.

    Returns an :class:`ArrayDataset` (small images, decoded once and cached under
    ``cache_dir`` / ``$POF_CACHE`` / ``~/.cache/pof``) or a :class:`StreamingImageFolder`.
    """
    cache = _cache_root(cache_dir)
    if str(path_or_name).lower() == "digits":
        return _load_digits(split, cache)
    path = Path(path_or_name).expanduser()
    if not path.exists():
        raise DataError(f"dataset path does not exist: {path}")
    with _cache_lock(cache, _hash(str(path.resolve()))):
        return _load_path(path, split, cache, progress)


def _lone_archive(path: Path) -> Path | None:
    """The one archive in a directory that holds no data folders (e.g. our CIFAR copy)."""
    if not path.is_dir() or any(p.is_dir() for p in path.iterdir()):
        return None
    archives = [p for p in path.iterdir() if p.is_file() and _is_archive(p)]
    return archives[0] if len(archives) == 1 else None


def _load_path(path: Path, split: str, cache: Path, progress: bool) -> Dataset:
    path = _lone_archive(path) or path
    name, ident = path.resolve().name, None
    if path.is_file():
        if not _is_archive(path):
            raise DataError(f"unrecognised dataset format (not a directory or .tar.gz): {path}")
        st = path.stat()
        ident = _hash(str(path.resolve()), st.st_size, st.st_mtime_ns)
        name = _archive_stem(path)
        index: dict = {}
        try:
            index = json.loads(_archive_index_path(cache, name, ident).read_text())
        except (OSError, ValueError):
            pass
        if index.get("splits"):  # fast path: this split of this archive is already decoded
            s = _resolve_split(split, index["splits"], path)
            key = _hash(_CACHE_VERSION, "folder", ident, s)
            if (ds := _load_npz(_npz_path(cache, name, s, key), s, str(path))) is not None:
                return ds
        if index.get("fast", True):
            ds = _decode_archive(path, cache, name, ident, split, progress)
            if ds is not None:
                return ds
        root = _extract(path, cache / "extracted" / f"{name}-{ident[:12]}", progress)
        fmt, root = _detect(root)
        if not index:
            splits = _folder_splits(root) if fmt == "folder" else []
            _write_archive_index(cache, name, ident, splits, fast=False)
    elif path.is_dir():
        fmt, root = _detect(path)
    else:
        raise DataError(f"unrecognised dataset path (not a file or directory): {path}")
    if fmt == "folder":
        return _load_folder(root, split, cache, progress, name, ident)
    if fmt in ("cifar10", "cifar100"):
        return _load_cifar(root, fmt, split, cache)
    return _load_idx(root, split, cache)


# --------------------------------------------------------------------------- loaders


def _epoch_indices(n: int, shuffle: bool, seed: int, epoch: int,
                   distributed: tuple[int, int] | None) -> Tensor:
    """Epoch order (seeded permutation if ``shuffle``), sharded like DistributedSampler."""
    if shuffle:
        g = torch.Generator().manual_seed(_mix(seed, epoch))
        idx = torch.randperm(n, generator=g)
    else:
        idx = torch.arange(n)
    if distributed is not None:
        rank, world = distributed
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"bad distributed=(rank, world_size): {distributed}")
        total = math.ceil(n / world) * world
        if total > n:  # pad by repeating the head so every rank gets the same count
            idx = idx.repeat(math.ceil(total / n))[:total]
        idx = idx[rank:total:world]
    return idx


def _batches(idx: Tensor, batch_size: int, drop_last: bool) -> list[Tensor]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
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

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

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
        g = torch.Generator().manual_seed(_mix(self.seed, self.epoch, rank, 1))
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
                                    aug_seed=_mix(self.seed, self.epoch, 2))
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
