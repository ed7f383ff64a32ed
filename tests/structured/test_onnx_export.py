"""ONNX export of every model kind, checked with onnxruntime; the CLI's channel flow."""

from importlib.util import find_spec

import pytest
import torch
from torch import nn

import pof
from pof.core.parametrizations import pruned_layers
from pof.errors import PofError
from pof.models import create_model
from pof.training.checkpoint import model_from_checkpoint, save_checkpoint

needs_speed = pytest.mark.skipif(
    not all(find_spec(p) for p in ("onnxruntime", "torch_pruning")),
    reason="needs the speed extra (onnxruntime, torch-pruning)")


def _model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    m = pof.to_sphere(create_model("resnet20").eval())
    if kind in ("zero", "mean"):
        pof.prune(m, 0.7, recover=kind)
    elif kind == "channel":
        pof.prune_channels(m, 0.5, recover="mean", batches=[torch.randn(4, 3, 32, 32)])
    return m


@needs_speed
@pytest.mark.parametrize("kind", ["dense", "zero", "mean", "channel"])
def test_onnx_matches_pytorch(kind, tmp_path):
    from pof.export.onnx import max_error

    model = _model(kind)
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    pof.export_onnx(model, tmp_path / "m.onnx", torch.zeros(1, 3, 32, 32))
    assert not pruned_layers(model)  # made plain for export
    assert not any(pof.is_folded(m) for m in model.modules())
    torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=1e-5)
    assert max_error(tmp_path / "m.onnx", model, x) < 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temp file left


@needs_speed
def test_onnx_of_a_mean_pruned_transformer(tmp_path):
    """Folded attention and Linear layers export as plain ones, batch size still dynamic."""
    from pof.export.onnx import max_error

    torch.manual_seed(0)
    model = pof.to_sphere(create_model("vit_tiny").eval())
    pof.prune(model, 0.5, recover="mean")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    pof.export_onnx(model, tmp_path / "vit.onnx", torch.zeros(1, 3, 32, 32))
    assert not any(pof.is_folded(m) for m in model.modules())
    torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=1e-5)
    assert max_error(tmp_path / "vit.onnx", model, x) < 1e-4


@needs_speed
def test_missing_onnxruntime_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    with pytest.raises(PofError, match=r"onnxruntime package: pip install 'pof\[speed\]'"):
        pof.export_onnx(create_model("small_cnn"), tmp_path / "m.onnx", torch.zeros(1, 1, 8, 8))
    assert not list(tmp_path.iterdir())


@needs_speed
def test_cli_prunes_channels_and_exports_onnx(tmp_path, capsys):
    from pof.cli import main

    model = pof.to_sphere(create_model("small_cnn").eval())
    src = save_checkpoint(tmp_path / "m.safetensors", model, {
        "arch": {"name": "small_cnn", "num_classes": 10, "kwargs": {}},
        "data": {"source": "digits", "image_size": [1, 8, 8]}})
    assert main(["prune", str(src), "--structure", "channel", "--sparsity", "0.5",
                 "--recover", "mean", "--mean-batches", "1", "--onnx", "--out",
                 str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "channels removed" in out and "onnxruntime matches" in out
    assert (tmp_path / "p" / "model.onnx").stat().st_size > 0
    pruned, meta = model_from_checkpoint(tmp_path / "p" / "pruned.safetensors")
    assert meta["pruned"]["structure"] == "channel"
    assert pruned.features[1][0].out_channels == 32  # 64 -> 32
    assert main(["eval", str(tmp_path / "p" / "pruned.safetensors")]) == 0
    assert main(["export", str(tmp_path / "p" / "pruned.safetensors"), "--format", "onnx",
                 "--out", str(tmp_path / "m.onnx")]) == 0
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out
    assert main(["finetune", str(tmp_path / "p" / "pruned.safetensors"), "--max-steps", "2",
                 "--out", str(tmp_path / "ft"), "--progress", "false", "--workers", "0"]) == 0
    tuned, meta = model_from_checkpoint(tmp_path / "ft" / "last.safetensors")
    assert meta["step"] == 2 and tuned.features[1][0].out_channels == 32
    for bad in (["--pattern", "2:4"], ["--sparsity", "0.5", "--scope", "global"],
                ["--sparsity", "0.5", "--structure", "weight", "--importance", "magnitude"]):
        flags = ["--structure", "channel", *bad] if "--structure" not in bad else bad
        assert main(["prune", str(src), *flags, "--out", str(tmp_path / "q")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
    assert not (tmp_path / "q").exists()


def test_semi_structured_checks_pattern_and_device():
    from pof.export.semi_structured import check_two_four, to_semi_structured

    lin = nn.Linear(8, 4)
    with pytest.raises(PofError, match="layer 'fc' is not 2:4 sparse"):
        check_two_four(lin.weight, "fc")
    pof.prune(nn.Sequential(lin), None, pattern="2:4", keep_first_conv=False)
    check_two_four(lin.weight, "fc")  # exactly 2 of every 4 kept
    if not torch.cuda.is_available():
        with pytest.raises(PofError, match="CUDA"):
            to_semi_structured(nn.Sequential(lin))
