"""BatchNorm recalibration after pruning: exact statistics, restored state, sweep, CLI."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pof
from pof.core.bn_recal import preserved_bn_stats
from pof.sweep import sweep


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        return self.fc(self.drop(x.mean((2, 3))))


def batches(n: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(16, 3, 8, 8, generator=g) + 0.5 for _ in range(n)]


def test_statistics_are_the_average_over_the_batches_and_state_is_restored():
    torch.manual_seed(0)
    model = Net().train()
    model.bn.momentum = 0.3
    pof.prune(model, 0.5, keep_first_conv=False)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    xs = batches()
    seen = pof.recalibrate_bn(model, [(x, torch.zeros(len(x))) for x in xs], num_batches=2)
    assert seen == 32
    with torch.no_grad():
        pre = [model.conv(x) for x in xs[:2]]
    mean = torch.stack([p.mean((0, 2, 3)) for p in pre]).mean(0)
    var = torch.stack([p.var((0, 2, 3)) for p in pre]).mean(0)  # unbiased per batch
    torch.testing.assert_close(model.bn.running_mean, mean)
    torch.testing.assert_close(model.bn.running_var, var)
    assert model.training and model.drop.training and model.bn.momentum == 0.3
    for k, v in model.state_dict().items():
        if "running" not in k and "num_batches" not in k:
            torch.testing.assert_close(v, weights[k])  # no weight moved


def test_dropout_stays_off_while_recalibrating():
    model = Net().eval()
    out = []
    model.fc.register_forward_hook(lambda m, a, o: out.append(a[0]))
    x = batches(1)[0]
    pof.recalibrate_bn(model, [x, x])
    assert torch.equal(out[0], out[1])  # deterministic: dropout was not active
    assert not model.training


def test_errors():
    with pytest.raises(ValueError, match="no BatchNorm"):
        pof.recalibrate_bn(nn.Sequential(nn.Linear(2, 2)), [torch.randn(1, 2)])
    with pytest.raises(ValueError, match="no batches"):
        pof.recalibrate_bn(Net(), [])
    with pytest.raises(ValueError, match="num_batches"):
        pof.recalibrate_bn(Net(), batches(), num_batches=0)


def test_preserved_bn_stats_restores_on_error():
    model = Net()
    before = model.bn.running_mean.clone()
    with pytest.raises(RuntimeError), preserved_bn_stats(model):
        pof.recalibrate_bn(model, batches())
        assert not torch.equal(model.bn.running_mean, before)
        raise RuntimeError
    assert torch.equal(model.bn.running_mean, before)


def test_sweep_recalibrates_pruned_runs_only_and_leaves_model_unchanged():
    torch.manual_seed(0)
    model = Net().eval()
    pof.recalibrate_bn(model, batches())  # realistic starting statistics
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = batches(1)[0]
    calls = []

    def evaluate(m):
        with torch.no_grad():
            return {"top1": float(m(x).sum()), "mean": float(m.bn.running_mean.sum())}

    def recal(m):
        calls.append(1)
        pof.recalibrate_bn(m, batches(2))

    plain = sweep(model, evaluate, [0.5, 0.9], progress=False)
    rows = sweep(model, evaluate, [0.5, 0.9], progress=False, recalibrate=recal)
    assert len(calls) == 4  # 2 sparsities x zero/mean, never the dense run
    assert [r["bn_recal"] for r in rows] == [False] + [True] * 4
    assert rows[0] == {**plain[0], "bn_recal": False}
    assert all(r["mean"] != p["mean"] for r, p in zip(rows[1:], plain[1:], strict=True))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k])


def test_cli_prune_with_bn_recal(tmp_path, capsys):
    from pof.cli import main
    from pof.training.checkpoint import model_from_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = pof.create_model("small_cnn", num_classes=10, in_channels=1, width=8)
    src = save_checkpoint(tmp_path / "m.safetensors", model, {
        "arch": {"name": "small_cnn", "num_classes": 10,
                 "kwargs": {"in_channels": 1, "width": 8}},
        "data": {"source": "digits"}})
    assert main(["prune", str(src), "--sparsity", "0.7", "--bn-recal", "2",
                 "--out", str(tmp_path / "p")]) == 0
    pruned, meta = model_from_checkpoint(tmp_path / "p" / "pruned.safetensors")
    assert meta["pruned"]["bn_recal_batches"] == 2
    bn = next(m for m in pruned.modules() if isinstance(m, nn.BatchNorm2d))
    assert not torch.equal(bn.running_var, torch.ones_like(bn.running_var))  # re-estimated
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # argparse errors: one line, exit 2
        main(["prune", str(src), "--sparsity", "0.7", "--bn-recal", "-1",
              "--out", str(tmp_path / "q")])
    assert e.value.code == 2 and ">= 0" in capsys.readouterr().err
