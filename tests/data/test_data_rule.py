"""Issue 25: one data rule for every command, and what `pof prune` says.

The data the user passes wins; a checkpoint's recorded data is used only where it is the
same data (classes, image size, statistics), said so in one line; files made by prune,
finetune and export record the data they came from. Tiny on-disk ImageFolder copies
(three classes of 8x8 PNGs) stand in for a data set at several paths.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from pof.cli import main
from pof.training.checkpoint import read_meta


def _make_data(root: Path, shift: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 6)):
        for ci, c in enumerate("abc"):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = (rng.random((8, 8)) * 60 + 60 * ci + shift).clip(0, 255)
                Image.fromarray(img.astype(np.uint8), "L").save(d / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint trained on copy A (one epoch of small_cnn), and the folder it is in;
    decoded data is cached in that folder."""
    root = tmp_path_factory.mktemp("rule")
    mp = pytest.MonkeyPatch()
    mp.setenv("POF_CACHE", str(root / "cache"))
    data = _make_data(root / "A")
    assert main(["train", "--model", "small_cnn",
                 "--data", str(data), "--epochs", "1", "--batch-size", "12",
                 "--progress", "false", "--workers", "0", "--out", str(root / "run")]) == 0
    yield root / "run" / "final.safetensors", root
    mp.undo()


def _out(capsys) -> str:
    """Everything printed: results on stdout, the one-line data notes on stderr."""
    got = capsys.readouterr()
    return got.out + got.err


def test_eval_says_it_uses_the_recorded_data_and_refuses_other_data_there(trained, tmp_path,
                                                                          capsys):
    ckpt, root = trained
    assert main(["eval", str(ckpt)]) == 0
    out = _out(capsys)
    assert f"pof eval: data {root / 'A'} (recorded in {ckpt}" in out and "top1" in out
    # the recorded path now holds other data (other statistics): refused, not evaluated
    from pof.training.checkpoint import model_only_copy

    moved = _make_data(tmp_path / "A", shift=50)
    ck = model_only_copy(ckpt, tmp_path / "m.safetensors", data_source=str(moved))
    assert main(["eval", str(ck)]) == 2
    err = capsys.readouterr().err
    assert "not the same (mean differ" in err and "pass --data PATH" in err
    assert main(["eval", str(ck), "--data", str(root / "A")]) == 0  # what the user passed wins
    assert "top1" in _out(capsys)


def test_prune_records_its_data_so_eval_finetune_export_of_its_output_need_no_flag(
        trained, tmp_path, capsys):
    ckpt, root = trained
    copy_b = tmp_path / "B"
    shutil.copytree(root / "A", copy_b)
    pruned = tmp_path / "p" / "pruned.safetensors"
    assert main(["prune", str(ckpt), "--sparsity", "0.5", "--data", str(copy_b),
                 "--out", str(tmp_path / "p")]) == 0
    assert read_meta(pruned)["data"]["source"] == str(copy_b.resolve())
    # the training copy disappears (another machine): the pruned file still evaluates
    hidden = root / "A-away"
    (root / "A").rename(hidden)
    try:
        _out(capsys)
        assert main(["eval", str(pruned)]) == 0
        assert f"pof eval: data {copy_b.resolve()}" in _out(capsys)
        assert main(["export", str(pruned), "--out", str(tmp_path / "small.safetensors")]) == 0
        assert main(["eval", str(tmp_path / "small.safetensors")]) == 0
        assert "top1" in _out(capsys)
        assert main(["finetune", str(pruned), "--max-steps", "1", "--progress", "false",
                     "--workers", "0", "--out", str(tmp_path / "ft")]) == 0
        assert f"pof finetune: data {copy_b.resolve()}" in _out(capsys)
        ft = read_meta(tmp_path / "ft" / "last.safetensors")
        assert ft["data"]["source"] == str(copy_b.resolve())  # trained on B, recorded
    finally:
        hidden.rename(root / "A")


def test_finetune_refuses_a_recorded_path_that_now_holds_other_data(trained, tmp_path, capsys):
    ckpt, _ = trained
    from pof.training.checkpoint import model_only_copy

    other = _make_data(tmp_path / "C", shift=50)
    ck = model_only_copy(ckpt, tmp_path / "m.safetensors", data_source=str(other))
    assert main(["finetune", str(ck), "--max-steps", "1", "--progress", "false",
                 "--out", str(tmp_path / "ft")]) == 2
    assert "not the same (mean differ" in capsys.readouterr().err
    assert not (tmp_path / "ft").exists()


def test_sweep_checks_the_recorded_data_and_says_which_it_uses(trained, tmp_path, capsys):
    ckpt, root = trained
    from pof.training.checkpoint import model_only_copy

    ck = model_only_copy(ckpt, tmp_path / "m.safetensors",
                         data_source=str(_make_data(tmp_path / "C", shift=50)))
    assert main(["sweep", str(ck), "--sparsities", "0.5", "--out", str(tmp_path / "s")]) == 2
    assert "not the same" in capsys.readouterr().err
    assert main(["sweep", str(ckpt), "--sparsities", "0.5", "--out", str(tmp_path / "s")]) == 0
    assert _out(capsys).count(f"pof sweep: data {root / 'A'}") == 1  # one line per model


def test_train_init_uses_the_checkpoints_data_unless_told_and_says_when_told_otherwise(
        trained, tmp_path, capsys):
    ckpt, root = trained
    common = ["train", "--init", str(ckpt), "--model", "small_cnn",
              "--max-steps", "1", "--progress", "false", "--workers", "0",
              "--batch-size", "12"]
    assert main([*common, "--out", str(tmp_path / "r1")]) == 0  # not digits, the default
    assert f"pof train: data {root / 'A'}" in _out(capsys)
    assert read_meta(tmp_path / "r1" / "last.safetensors")["data"]["source"] == str(root / "A")
    other = _make_data(tmp_path / "C", shift=50)
    assert main([*common, "--data", str(other), "--out", str(tmp_path / "r2")]) == 0
    assert re.search(rf"pof train: training on {re.escape(str(other))}, not on the data .* "
                     r"\(.*mean differ", _out(capsys))


def test_prune_prints_top1_before_and_after_unless_no_eval(trained, tmp_path, capsys):
    ckpt, _ = trained
    assert main(["prune", str(ckpt), "--sparsity", "0.5", "--out", str(tmp_path / "p")]) == 0
    assert re.search(r"top1 before [\d.]+%  after [\d.]+%", _out(capsys))
    assert main(["prune", str(ckpt), "--sparsity", "0.5", "--no-eval",
                 "--out", str(tmp_path / "q")]) == 0
    out = _out(capsys)
    assert "top1 before" not in out and "pof prune: data" not in out


def test_prune_of_a_gmp_checkpoint_prunes_further_in_cli_words(trained, tmp_path, capsys):
    import pof
    from pof.training.checkpoint import model_from_checkpoint

    data = _make_data(tmp_path / "A")
    assert main(["train", "--model", "small_cnn",
                 "--data", str(data), "--epochs", "1", "--batch-size", "12", "--penalty",
                 "gmp", "--sparsity", "0.6", "--gmp-every", "1", "--progress", "false",
                 "--workers", "0", "--out", str(tmp_path / "gmp")]) == 0
    ckpt = tmp_path / "gmp" / "final.safetensors"
    _out(capsys)
    assert main(["prune", str(ckpt), "--sparsity", "0.8", "--out", str(tmp_path / "p")]) == 0
    out = _out(capsys)
    assert "is already pruned" in out and "pof.remove" not in out and "top1 before" in out
    model, _ = model_from_checkpoint(tmp_path / "p" / "pruned.safetensors")
    layers = [r for r in pof.sparsity_report(model).layers if r.sparsity > 0]
    assert layers and all(r.sparsity == pytest.approx(0.8, abs=0.02) for r in layers)
