"""Sweeps (pof.sweep) and their reports (pof.report): rows, invariance, tables, plots."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pof
from pof.core.masks import parse_sparsities
from pof.report import markdown_table, plot_sweep, plot_weight_histograms, write_json
from pof.sweep import sweep

PNG = b"\x89PNG\r\n\x1a\n"
SPARSITIES = (0.3, 0.5, 0.9)


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.bn3 = nn.BatchNorm1d(64)  # centred features: the dense predictions vary
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(self.bn3(F.adaptive_avg_pool2d(x, 2).flatten(1)))


def make_model() -> nn.Module:
    torch.manual_seed(0)
    model = TinyNet()
    with torch.no_grad():  # non-trivial BN running statistics
        model.train()
        for _ in range(3):
            model(torch.randn(32, 3, 8, 8))
    return model.eval()


def make_evaluate(model: nn.Module):
    """Agreement with the dense model's predictions on a fixed random batch."""
    x = torch.randn(256, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        target = model(x).argmax(1)

    def evaluate(m: nn.Module) -> dict[str, float]:
        m.eval()
        with torch.no_grad():
            logits = m(x)
        top5 = logits.topk(5, 1).indices
        return {
            "top1": float((logits.argmax(1) == target).float().mean()),
            "top5": float((top5 == target[:, None]).any(1).float().mean()),
            "loss": float(F.cross_entropy(logits, target)),
        }

    return evaluate


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "params": [(n, id(p)) for n, p in model.named_parameters()],
        "buffers": [n for n, _ in model.named_buffers()],
        "modules": [(n, type(m), m.training) for n, m in model.named_modules()],
    }


def assert_same(before: dict, after: dict) -> None:
    assert after["params"] == before["params"]
    assert after["buffers"] == before["buffers"]
    assert after["modules"] == before["modules"]
    assert list(after["state"]) == list(before["state"])
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), k


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    model = make_model()
    return sweep(model, make_evaluate(model), SPARSITIES, progress=False, label="tiny")


def test_sweep_rows(rows):
    assert len(rows) == 1 + len(SPARSITIES) * 2
    assert {k for r in rows for k in r} == {
        "label", "sparsity", "recover", "measured_sparsity", "bn_recal", "top1", "top5", "loss"}
    assert not any(r["bn_recal"] for r in rows)
    dense = rows[0]
    assert (dense["sparsity"], dense["recover"], dense["label"]) == (0.0, "dense", "tiny")
    assert dense["top1"] == 1.0 and dense["measured_sparsity"] < 1e-2
    runs = [(r["recover"], r["sparsity"]) for r in rows[1:]]
    assert runs == [(rec, s) for rec in ("zero", "mean") for s in SPARSITIES]
    for r in rows[1:]:
        assert abs(r["measured_sparsity"] - r["sparsity"]) < 1e-2
    zero = {r["sparsity"]: r for r in rows if r["recover"] == "zero"}
    assert zero[0.9]["top1"] < dense["top1"] - 0.2  # heavy pruning changes many predictions
    assert zero[0.9]["top1"] < zero[0.3]["top1"]
    assert zero[0.9]["loss"] > dense["loss"]


def test_sweep_leaves_model_unchanged():
    model = make_model()
    before = snapshot(model)
    sweep(model, make_evaluate(model), (0.5, 0.8), progress=False)
    assert_same(before, snapshot(model))
    assert not any(pof.is_pruned(m) for m in model.modules())


def test_sweep_sphere_model_unchanged():
    model = pof.to_sphere(make_model())
    before = snapshot(model)
    rows = sweep(model, make_evaluate(model), (0.5,), progress=False)
    assert rows[0]["top1"] == 1.0 and len(rows) == 3
    assert_same(before, snapshot(model))
    assert pof.is_sphere(model.conv2) and not pof.is_pruned(model.conv2)


def test_sweep_measures_only_pruned_layers():
    model = make_model()
    rows = sweep(model, make_evaluate(model), (0.5,), recovers=("zero",), exclude="fc",
                 progress=False)
    # only conv2 is pruned (conv1 is kept by default, fc is excluded): exactly 50% of it
    assert rows[1]["measured_sparsity"] == pytest.approx(0.5, abs=1e-3)


def test_sweep_unprunes_when_evaluate_fails():
    model = make_model()
    before = snapshot(model)
    calls = []

    def evaluate(m):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return {"top1": 1.0}

    with pytest.raises(RuntimeError, match="boom"):
        sweep(model, evaluate, (0.5,), progress=False)
    assert_same(before, snapshot(model))


def test_sweep_validates():
    model = make_model()
    with pytest.raises(ValueError, match="1.2"):
        sweep(model, make_evaluate(model), (0.5, 1.2), progress=False)
    with pytest.raises(ValueError, match="recover"):
        sweep(model, make_evaluate(model), (0.5,), recovers=("median",), progress=False)
    pof.prune(model, 0.5)
    with pytest.raises(ValueError, match="already pruned"):
        sweep(model, make_evaluate(model), (0.5,), progress=False)


def test_parse_sparsities():
    assert parse_sparsities("0.3,0.5,0.7") == [0.3, 0.5, 0.7]
    assert parse_sparsities(" 0, .25 ,0.99") == [0.0, 0.25, 0.99]
    for bad, msg in [("", "no sparsities"), ("0.3,,0.5", "empty"), ("0.3,abc", "'abc'"),
                     ("50%", "fractions"), ("1.0", r"\[0, 1\)"), ("-0.1", r"\[0, 1\)"),
                     ("nan", "not a number")]:
        with pytest.raises(ValueError, match=msg):
            parse_sparsities(bad)


def test_markdown_table(rows):
    table = markdown_table(rows).splitlines()
    assert table[0] == "| model | recovery | dense | 30% | 50% | 90% |"
    assert table[1] == "|---|---|---:|---:|---:|---:|"
    assert [line.split(" | ")[1] for line in table[2:]] == ["mean", "zero"]  # sorted
    assert table[2].startswith("| tiny | mean | 100.00 | ")
    zero90 = next(r for r in rows if r["recover"] == "zero" and r["sparsity"] == 0.9)
    assert table[3].endswith(f" {100 * zero90['top1']:.2f} |")


def test_plots_and_json(rows, tmp_path):
    other = [dict(r, label="other", top1=r["top1"] * 0.9) for r in rows]
    plot_sweep(rows + other, tmp_path / "plots" / "sweep.png", title="tiny sweep")
    model = make_model()
    pruned = pof.prune(make_model(), 0.7)
    plot_weight_histograms({"dense": model, "pruned 70%": pruned}, tmp_path / "hist.png")
    for name in ("plots/sweep.png", "hist.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == PNG and len(data) > 1000
    write_json({"rows": rows, "t": torch.tensor(0.5)}, tmp_path / "out" / "rows.json")
    assert json.loads((tmp_path / "out" / "rows.json").read_text())["rows"] == rows
