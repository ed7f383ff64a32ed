"""The decode cache: its folder, keys, ``.npz`` arrays, train-split statistics, a lock."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..errors import one_line as _one_line
from ..fileio import atomic_write as _atomic_write
from .datasets import ArrayDataset, DataSpec


def digest(*parts: object) -> str:
    """SHA-256 hex digest of ``parts`` (as JSON): the cache key of a decoded split."""
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def mix_seed(*ints: int) -> int:
    """Well-mixed 63-bit seed from integers (seed, epoch, ...)."""
    ss = np.random.SeedSequence([int(x) & 0xFFFFFFFFFFFFFFFF for x in ints])
    return int(ss.generate_state(1, dtype=np.uint64)[0]) & 0x7FFFFFFFFFFFFFFF


def cache_root(cache_dir: str | os.PathLike | None) -> Path:
    """The cache folder (``cache_dir``, else ``$POF_CACHE``, else ``~/.cache/pof``), created."""
    root = Path(cache_dir or os.environ.get("POF_CACHE") or "~/.cache/pof").expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create cache dir {root}: {_one_line(e)} "
                        "(set POF_CACHE or pass cache_dir)") from None
    return root




def stats_from_uint8(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
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


def resolve_split(split: str, available: Sequence[str], where: Path | str) -> str:
    """Map a requested split onto an available one ("val" and "test" accept each other)."""
    s = split.lower()
    alias = {"val": ("val", "test"), "test": ("test", "val"), "validation": ("val", "test")}
    for cand in alias.get(s, (s,)):
        if cand in available:
            return cand
    found = ", ".join(sorted(available)) or "none"
    raise DataError(f"unknown split {split!r} for {where}; splits found: {found}")


def make_array_dataset(images: np.ndarray, labels: np.ndarray, classes: list[str],
                        mean: Sequence[float], std: Sequence[float], split: str,
                        source: str) -> ArrayDataset:
    """An in-memory data set of uint8 ``images`` with its spec (classes, size, statistics)."""
    spec = DataSpec(num_classes=len(classes), classes=list(classes),
                    image_size=tuple(int(s) for s in images.shape[1:]),
                    mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))
    return ArrayDataset(torch.from_numpy(np.ascontiguousarray(images)),
                        torch.from_numpy(np.asarray(labels, dtype=np.int64)), spec, split, source)


def cached_stats(cache: Path, key: str, compute) -> tuple[tuple, tuple]:
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



def npz_path(cache: Path, name: str, split: str, key: str) -> Path:
    """The cache file of one decoded split."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "data"
    return cache / f"{safe}-{split}-{key[:16]}.npz"


def load_npz(path: Path, split: str, source: str) -> ArrayDataset | None:
    """A decoded split from the cache, or None when it is not there."""
    try:
        with np.load(path, allow_pickle=False) as d:
            return make_array_dataset(d["images"], d["labels"], [str(c) for c in d["classes"]],
                                       d["mean"], d["std"], split, source)
    except FileNotFoundError:
        return None
    except Exception:  # damaged cache: rebuild it
        path.unlink(missing_ok=True)
        return None



def save_npz(path: Path, images: np.ndarray, labels: np.ndarray, classes: list[str],
              mean: Sequence[float], std: Sequence[float]) -> None:
    """Write a decoded split to the cache (atomically)."""
    arrays = dict(images=images, labels=labels, classes=np.array(classes), mean=np.array(mean),
                  std=np.array(std))
    _atomic_write(path, lambda f: np.savez(f, **arrays))



@contextlib.contextmanager
def cache_lock(cache: Path, key: str) -> Iterator[None]:
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
