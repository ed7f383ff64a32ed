"""Issue 25: sweeps of models saved sparse, ``pof.load`` / ``pof.save`` round trips, and
Hugging Face ``save_pretrained`` of a mean-recovered model."""

from __future__ import annotations

import json

import pytest
import torch

import pof
from pof.cli import main


def _saved_sparse(path, sparsity=0.6):
    """A small_cnn checkpoint saved with prune masks on (what a GMP run writes)."""
    from pof.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = pof.create_model("small_cnn", num_classes=10, width=8)
    pof.prune(model, sparsity, recover="zero")
    return save_checkpoint(path, model, {
        "arch": {"name": "small_cnn", "num_classes": 10, "kwargs": {"width": 8}},
        "data": {"source": "digits"}})


def test_sweep_puts_a_model_saved_sparse_at_its_sparsity_as_saved(tmp_path, monkeypatch):
    import pof.report as report

    ckpt = _saved_sparse(tmp_path / "gmp.safetensors")
    figs = []
    monkeypatch.setattr(report, "_save", lambda fig, path: figs.append(fig))
    assert main(["sweep", str(ckpt), "--sparsities", "0.8", "--recover", "zero",
                 "--out", str(tmp_path / "s")]) == 0
    table = (tmp_path / "s" / "sweep.md").read_text().splitlines()
    assert table[0] == "| model | recovery | as saved | 80% |"
    assert table[2].startswith("| gmp | zero | ") and " @ 60.0% |" in table[2]
    rows = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert rows[0]["measured_sparsity"] == pytest.approx(0.6, abs=1e-3)
    ax = figs[0].axes[0]
    point = next(line for line in ax.lines if line.get_label() == "gmp as saved (60.0%)")
    assert point.get_xdata()[0] == pytest.approx(60.0, abs=0.1)  # not at 0%
    assert not any("dense" in line.get_label() for line in ax.lines)
