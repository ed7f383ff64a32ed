"""Tests for pof.data: formats, decode-once cache, loaders, and DataError cases."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pof import data as D
from pof.data import ArrayDataset, DataError, DataSpec, load_dataset, make_loader
from pof.data import folder as folder_reader
from pof.data import load as loading

CIFAR_TGZ = Path(__file__).resolve().parents[3] / "shared/data/cifar10/cifar10-jpeg.tar.gz"
CLASSES = ["cat", "dog", "frog"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Every test gets its own cache dir through $POF_CACHE."""
    monkeypatch.setenv("POF_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _img(rng: np.random.Generator, size=(16, 12), mode="RGB") -> Image.Image:
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def _make_folder(root: Path, n_train=4, n_test=2, size=(16, 12), seed=0) -> Path:
    """ImageFolder: train/test x cat (png), dog (jpg), frog (png)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for c in CLASSES:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                ext = "jpg" if c == "dog" else "png"
                _img(rng, size).save(d / f"{i:03d}.{ext}")
            (d / "notes.txt").write_text("not an image")  # ignored
    return root


def _tar(src: Path, dest: Path, arcname: str) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(src, arcname=arcname)
    return dest


def _msg_ok(e: pytest.ExceptionInfo, path) -> None:
    msg = str(e.value)
    assert str(path) in msg, msg
    assert "\n" not in msg


# --------------------------------------------------------------------------- formats


def test_imagefolder_shapes_labels(tmp_path):
    root = _make_folder(tmp_path / "mini")
    ds = load_dataset(str(root), "train", progress=False)
    assert isinstance(ds, ArrayDataset) and len(ds) == 12
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (12, 3, 12, 16)
    assert ds.labels.dtype == torch.int64
    assert ds.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert ds.spec.classes == CLASSES and ds.spec.num_classes == 3
    assert ds.spec.image_size == (3, 12, 16)
    png = np.asarray(Image.open(root / "train" / "cat" / "002.png")).transpose(2, 0, 1)
    assert np.array_equal(ds.images[2].numpy(), png)  # lossless PNG round trip
    x = ds.images.double() / 255
    assert np.allclose(ds.spec.mean, x.mean(dim=(0, 2, 3)).numpy(), atol=1e-5)
    assert np.allclose(ds.spec.std, x.std(dim=(0, 2, 3), unbiased=False).numpy(), atol=1e-5)
    te = load_dataset(str(root), "test", progress=False)
    assert len(te) == 6 and te.spec.mean == ds.spec.mean  # normalised with train stats
    assert load_dataset(str(root), "val", progress=False).images.equal(te.images)  # alias


def test_grayscale_folder(tmp_path):
    rng = np.random.default_rng(1)
    for c in ("a", "b"):
        (tmp_path / "g" / "train" / c).mkdir(parents=True)
        for i in range(3):
            _img(rng, (10, 10), "L").save(tmp_path / "g" / "train" / c / f"{i}.png")
    ds = load_dataset(str(tmp_path / "g"), progress=False)
    assert ds.images.shape == (6, 1, 10, 10) and len(ds.spec.mean) == 1


def test_cache_reused(tmp_path, _cache, monkeypatch):
    root = _make_folder(tmp_path / "mini")
    a = load_dataset(str(root), "train", progress=False)
    npz = sorted(_cache.glob("*train*.npz"))
    assert len(npz) == 1
    stamp = npz[0].stat().st_mtime_ns

    def boom(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(folder_reader, "_decode_image", boom)
    b = load_dataset(str(root), "train", progress=False)
    assert b.images.equal(a.images) and b.labels.equal(a.labels) and b.spec == a.spec
    assert sorted(_cache.glob("*train*.npz")) == npz and npz[0].stat().st_mtime_ns == stamp
    # a changed file list invalidates the key
    monkeypatch.undo()
    monkeypatch.setenv("POF_CACHE", str(_cache))
    _img(np.random.default_rng(9), (16, 12)).save(root / "train" / "cat" / "100.png")
    assert len(load_dataset(str(root), "train", progress=False)) == 13


def test_tar_archive_matches_folder(tmp_path, _cache, monkeypatch):
    root = _make_folder(tmp_path / "mini")
    tgz = _tar(root, tmp_path / "mini.tar.gz", "mini")
    monkeypatch.setattr(folder_reader, "PARALLEL_MIN", 0)  # exercise the process pool once
    tr = load_dataset(str(tgz), "train", progress=False)
    folder = load_dataset(str(root), "train", progress=False)
    assert tr.images.equal(folder.images) and tr.labels.equal(folder.labels)
    assert tr.spec == folder.spec
    assert not (_cache / "extracted").exists()  # small images: decoded from the stream

    def boom(*a, **k):
        raise AssertionError("not cached")

    monkeypatch.setattr(loading, "decode_archive", boom)
    monkeypatch.setattr(folder_reader, "_decode_image", boom)
    te = load_dataset(str(tgz), "test", progress=False)  # cached in the same pass
    assert len(te) == 6 and te.spec.classes == CLASSES
    assert load_dataset(str(tgz), "train", progress=False).images.equal(tr.images)


def _write_cifar10(d: Path, per_batch=6, n_test=4) -> np.ndarray:
    rng = np.random.default_rng(0)
    d.mkdir(parents=True)
    allx = []
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        allx.append(x)
        y = [int(v) for v in rng.integers(0, 10, n)]
        with open(d / name, "wb") as f:
            pickle.dump({b"data": x, b"labels": y, b"batch_label": name.encode()}, f)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
             b"ship", b"truck"]
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f)
    return np.concatenate(allx)


def test_cifar10_pickle_dir(tmp_path):
    raw = _write_cifar10(tmp_path / "cifar-10-batches-py")
    ds = load_dataset(str(tmp_path), "train", progress=False)  # torchvision root also works
    assert ds.images.shape == (30, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.spec.classes[0] == "airplane" and ds.spec.num_classes == 10
    assert np.array_equal(ds.images[0, 1].numpy().ravel(), raw[0, 1024:2048])  # R,G,B planes
    te = load_dataset(str(tmp_path / "cifar-10-batches-py"), "test", progress=False)
    assert len(te) == 4 and te.spec.mean == ds.spec.mean


def test_directory_holding_one_archive(tmp_path, _cache):
    root = _make_folder(tmp_path / "mini")
    shipped = tmp_path / "shipped"  # like ../shared/data/cifar10: README + one tarball
    shipped.mkdir()
    _tar(root, shipped / "mini.tar.gz", "mini")
    (shipped / "README.md").write_text("about the data")
    ds = load_dataset(str(shipped), "train", progress=False)
    assert ds.images.equal(load_dataset(str(root), "train", progress=False).images)


def test_cifar10_pickle_tar(tmp_path):
    _write_cifar10(tmp_path / "src" / "cifar-10-batches-py")
    tgz = _tar(tmp_path / "src" / "cifar-10-batches-py", tmp_path / "c10.tar.gz",
               "cifar-10-batches-py")
    for _ in range(2):  # second time goes straight to the extracted copy
        ds = load_dataset(str(tgz), "train", progress=False)
        assert ds.images.shape == (30, 3, 32, 32)


def test_cifar100_pickle_dir(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    for name, n in (("train", 8), ("test", 3)):
        with open(d / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"fine_labels": list(range(n)), b"coarse_labels": [0] * n}, f)
    with open(d / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, f)
    ds = load_dataset(str(d), "test", progress=False)
    assert len(ds) == 3 and ds.spec.num_classes == 100 and ds.labels.tolist() == [0, 1, 2]


def _write_idx(path: Path, arr: np.ndarray) -> None:
    blob = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    blob += arr.astype(np.uint8).tobytes()
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(blob)
    else:
        path.write_bytes(blob)


@pytest.mark.parametrize("gz", [True, False])
def test_idx(tmp_path, gz):
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    d = tmp_path / "mnist"
    d.mkdir()
    xs = {p: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for p, n in (("train", 20),
                                                                              ("t10k", 7))}
    for p, x in xs.items():
        _write_idx(d / f"{p}-images-idx3-ubyte{sfx}", x)
        _write_idx(d / f"{p}-labels-idx1-ubyte{sfx}", np.arange(len(x)) % 10)
    tr = load_dataset(str(d), "train", progress=False)
    assert tr.images.shape == (20, 1, 28, 28) and tr.spec.image_size == (1, 28, 28)
    assert np.array_equal(tr.images[:, 0].numpy(), xs["train"])
    assert tr.spec.classes == [str(i) for i in range(10)]
    te = load_dataset(str(d), "test", progress=False)
    assert len(te) == 7 and te.labels.tolist() == list(range(7)) and te.spec.mean == tr.spec.mean


def test_idx_bad_header(tmp_path):
    d = tmp_path / "mnist"
    d.mkdir()
    (d / "train-images-idx3-ubyte").write_bytes(b"garbage!" * 4)
    _write_idx(d / "train-labels-idx1-ubyte", np.zeros(3))
    with pytest.raises(DataError) as e:
        load_dataset(str(d), progress=False)
    _msg_ok(e, d / "train-images-idx3-ubyte")


def test_digits():
    tr = load_dataset("digits", "train", progress=False)
    te = load_dataset("digits", "test", progress=False)
    assert len(tr) == 1437 and len(te) == 360
    assert tr.spec == te.spec and tr.spec.image_size == (1, 8, 8) and tr.spec.num_classes == 10
    assert int(tr.images.max()) == 255 and tr.images.dtype == torch.uint8
    assert torch.bincount(te.labels).min() >= 35  # stratified
    again = load_dataset("digits", "train", progress=False)
    assert again.labels.equal(tr.labels) and again.images.equal(tr.images)


# --------------------------------------------------------------------------- loaders


def _ids_dataset(n: int, c: int = 3, hw: int = 8) -> ArrayDataset:
    """Dataset whose label is the sample index, for order / sharding checks."""
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (n, c, hw, hw), dtype=torch.uint8, generator=g)
    spec = DataSpec(n, [str(i) for i in range(n)], (c, hw, hw), (0.5,) * c, (0.25,) * c)
    return ArrayDataset(imgs, torch.arange(n), spec)


def test_loader_batches_and_normalisation():
    ds = load_dataset("digits", "train", progress=False)
    ev = make_loader(ds, 100, train=False)
    assert len(ev) == 15  # ceil(1437 / 100), no drop for eval
    xs, ys = zip(*ev, strict=True)
    assert xs[0].shape == (100, 1, 8, 8) and xs[0].dtype == torch.float32
    assert ys[0].dtype == torch.int64 and len(ys[-1]) == 37
    assert torch.cat(ys).equal(ds.labels)  # eval: dataset order
    x = torch.cat(xs)
    assert abs(x.mean().item()) < 1e-4 and abs(x.std(unbiased=False).item() - 1) < 1e-3
    tr = make_loader(ds, 100, train=True)
    assert len(tr) == 14 and all(len(y) == 100 for _, y in tr)  # drop_last for training
    assert len(make_loader(ds, 100, train=True, drop_last=False)) == 15
    assert len(make_loader(ds, 5000, train=True)) == 1  # never zero batches


def test_loader_determinism_and_epochs():
    ds = _ids_dataset(50)

    def run(**kw):
        return [(x, y) for x, y in make_loader(ds, 16, train=True, **kw)]

    a, b = run(seed=3, epoch=1), run(seed=3, epoch=1)
    assert all(xa.equal(xb) and ya.equal(yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True))
    order = torch.cat([y for _, y in a])
    assert not order.equal(torch.cat([y for _, y in run(seed=3, epoch=2)]))
    assert not order.equal(torch.cat([y for _, y in run(seed=4, epoch=1)]))
    assert len(set(order.tolist())) == 48  # a permutation (drop_last drops 2)


@pytest.mark.parametrize("world", [1, 3, 4])
def test_distributed_shards(world):
    n = 50
    ds = _ids_dataset(n)
    shards = [torch.cat([y for _, y in make_loader(ds, 7, train=True, augment=False,
                                                    distributed=(r, world), epoch=5,
                                                    drop_last=False)])
              for r in range(world)]
    per = -(-n // world)
    assert all(len(s) == per for s in shards)
    allids = torch.cat(shards).tolist()
    assert set(allids) == set(range(n))  # covering
    assert len(allids) - len(set(allids)) == per * world - n  # disjoint up to the padding
    loaders = [make_loader(ds, 7, train=True, distributed=(r, world)) for r in range(world)]
    assert len({len(ld) for ld in loaders}) == 1  # same number of steps on every rank


def test_augmentation_is_crop_and_flip():
    ds = _ids_dataset(20, c=3, hw=16)
    mean, std = torch.tensor(ds.spec.mean).view(1, -1, 1, 1), torch.tensor(ds.spec.std)
    ref = (ds.images.float() / 255 - mean) / std.view(1, -1, 1, 1)
    padded = torch.nn.functional.pad(ref, (2, 2, 2, 2), mode="reflect")  # pad = 16 // 8
    loader = make_loader(ds, 20, train=True, seed=1)
    assert loader.pad == 2 and loader.flip
    x, y = next(iter(loader))
    assert x.shape == (20, 3, 16, 16) and x.dtype == torch.float32
    flips = 0
    for xi, i in zip(x, y.tolist(), strict=True):
        cands = [(padded[i, :, a:a + 16, b:b + 16], f) for a in range(5) for b in range(5)
                 for f in (False, True)]
        hits = [f for c, f in cands if torch.allclose(xi, c.flip(2) if f else c, atol=1e-5)]
        assert hits, "augmented image is not a translated/flipped window"
        flips += hits[0]
    assert 0 < flips < 20
    gray = make_loader(load_dataset("digits", progress=False), 64, train=True)
    assert gray.pad == 1 and not gray.flip  # 8x8 grayscale: 1px crop only
    assert next(iter(gray))[0].shape == (64, 1, 8, 8)


# --------------------------------------------------------------------------- streaming


def test_streaming_large_images(tmp_path):
    root = _make_folder(tmp_path / "big", n_train=3, n_test=1, size=(80, 70))
    ds = load_dataset(str(root), "train", progress=False)
    assert isinstance(ds, D.StreamingImageFolder) and len(ds) == 9
    assert ds.spec.image_size == (3, 224, 224) and ds.spec.classes == CLASSES
    tr = make_loader(ds, 4, train=True, seed=0)
    assert len(tr) == 2
    batches = list(tr)
    x, y = batches[0]
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32 and y.dtype == torch.int64
    again = list(make_loader(ds, 4, train=True, seed=0))
    assert all(a[0].equal(b[0]) for a, b in zip(batches, again, strict=True))
    te = load_dataset(str(root), "test", progress=False)
    ev = list(make_loader(te, 2, train=False))
    assert [len(b[1]) for b in ev] == [2, 1] and ev[0][0].shape == (2, 3, 224, 224)


@pytest.mark.parametrize("workers", [0, 1])
def test_streaming_corrupt_body_on_first_use(tmp_path, workers):
    root = _make_folder(tmp_path / "big", n_train=2, n_test=1, size=(80, 70))
    bad = root / "train" / "dog" / "001.jpg"
    bad.write_bytes(bad.read_bytes()[:200])  # valid header, truncated body
    ds = load_dataset(str(root), "train", progress=False)  # header check passes
    with pytest.raises(DataError) as e:
        list(make_loader(ds, 6, train=False, num_workers=workers))
    _msg_ok(e, bad)


def test_streaming_corrupt_header_at_load(tmp_path):
    root = _make_folder(tmp_path / "big", n_train=2, n_test=1, size=(80, 70))
    bad = root / "train" / "frog" / "001.png"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(DataError) as e:
        load_dataset(str(root), "train", progress=False)
    _msg_ok(e, bad)


# --------------------------------------------------------------------------- bad data


def test_missing_path(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset(str(tmp_path / "nope"))
    _msg_ok(e, tmp_path / "nope")


def test_unknown_and_empty_split(tmp_path):
    root = _make_folder(tmp_path / "mini")
    with pytest.raises(DataError) as e:
        load_dataset(str(root), "holdout", progress=False)
    _msg_ok(e, root)
    assert "test, train" in str(e.value)
    (root / "val").mkdir()
    with pytest.raises(DataError) as e:
        load_dataset(str(root), "val", progress=False)
    _msg_ok(e, root / "val")
    with pytest.raises(DataError) as e:
        load_dataset("digits", "holdout")
    assert "digits" in str(e.value)


def test_class_folder_without_images(tmp_path):
    root = _make_folder(tmp_path / "mini")
    (root / "train" / "zebra").mkdir()
    (root / "train" / "zebra" / "readme.txt").write_text("x")
    with pytest.raises(DataError) as e:
        load_dataset(str(root), "train", progress=False)
    _msg_ok(e, root / "train" / "zebra")
    tgz = _tar(root, tmp_path / "mini.tgz", "mini")
    with pytest.raises(DataError) as e:
        load_dataset(str(tgz), "train", progress=False)
    _msg_ok(e, tgz)
    assert "zebra" in str(e.value)


def test_corrupt_image(tmp_path):
    root = _make_folder(tmp_path / "mini")
    bad = root / "train" / "dog" / "002.jpg"
    bad.write_bytes(os.urandom(64))
    with pytest.raises(DataError) as e:
        load_dataset(str(root), "train", progress=False)
    _msg_ok(e, bad)
    tgz = _tar(root, tmp_path / "mini.tar.gz", "mini")
    with pytest.raises(DataError) as e:
        load_dataset(str(tgz), "train", progress=False)
    _msg_ok(e, tgz)
    assert "dog/002.jpg" in str(e.value)


def test_unrecognised_format(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x").mkdir()
    (tmp_path / "empty" / "y").mkdir()
    with pytest.raises(DataError) as e:
        load_dataset(str(tmp_path / "empty"))
    _msg_ok(e, tmp_path / "empty")
    f = tmp_path / "data.csv"
    f.write_text("a,b\n")
    with pytest.raises(DataError) as e:
        load_dataset(str(f))
    _msg_ok(e, f)
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(gzip.compress(b"not a tar" * 100)[:50])
    with pytest.raises(DataError) as e:
        load_dataset(str(broken))
    _msg_ok(e, broken)


def test_png_bytes_are_valid():
    buf = io.BytesIO()
    _img(np.random.default_rng(0)).save(buf, "PNG")
    assert folder_reader._open_src(buf.getvalue()).size == (16, 12)


# --------------------------------------------------------------------------- real data


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("POF_SLOW") != "1", reason="set POF_SLOW=1 (decodes 60k JPEGs)")
@pytest.mark.skipif(not CIFAR_TGZ.exists(), reason=f"{CIFAR_TGZ} not present")
def test_real_cifar10_jpeg():
    tr = load_dataset(str(CIFAR_TGZ), "train", progress=False)
    te = load_dataset(str(CIFAR_TGZ), "test", progress=False)
    assert tr.images.shape == (50000, 3, 32, 32) and len(te) == 10000
    assert tr.spec.classes[:3] == ["airplane", "automobile", "bird"]
    assert np.allclose(tr.spec.mean, (0.4913, 0.4821, 0.4465), atol=2e-4)
    assert np.allclose(tr.spec.std, (0.2452, 0.2428, 0.2606), atol=2e-4)
    assert torch.bincount(tr.labels).tolist() == [5000] * 10


def test_given_stats_skip_the_training_split(tmp_path, _cache):
    root = _make_folder(tmp_path / "mini")
    stats = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    te = load_dataset(str(root), "test", progress=False, stats=stats)
    assert (te.spec.mean, te.spec.std) == stats and len(te) == 6
    assert not list(_cache.glob("*train*.npz"))  # the training split was never decoded
    plain = load_dataset(str(root), "test", progress=False)  # the cache is not polluted
    assert plain.spec.mean == load_dataset(str(root), "train", progress=False).spec.mean
    with pytest.raises(DataError, match="has 3 channels"):
        load_dataset(str(root), "test", progress=False, stats=((0.5,), (0.25,)))


def test_non_image_archive_is_sniffed_at_its_first_file(tmp_path, monkeypatch):
    import tarfile as tf

    from pof.data import archive

    _write_cifar10(tmp_path / "src" / "cifar-10-batches-py")
    tgz = _tar(tmp_path / "src" / "cifar-10-batches-py", tmp_path / "c10.tar.gz",
               "cifar-10-batches-py")
    read = []
    real_next = tf.TarFile.next
    monkeypatch.setattr(tf.TarFile, "next", lambda self: read.append(1) or real_next(self))
    assert archive.decode_archive(tgz, tmp_path, "c10", "id", "train", False) is None
    assert len(read) <= 3  # the folder entry, the first pickle (of 7 files), end of scan
