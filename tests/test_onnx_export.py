"""ONNX export of every model kind, checked with onnxruntime; the CLI's channel flow."""

import pytest
import torch

import pof
from pof.checkpoint import model_from_checkpoint, save_checkpoint
from pof.models import create_model
from pof.prune import pruned_layers

pytest.importorskip("onnxruntime")
pytest.importorskip("torch_pruning")


def _model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    m = pof.to_sphere(create_model("resnet20").eval())
    if kind in ("zero", "mean"):
        pof.prune(m, 0.7, recover=kind)
    elif kind == "channel":
        pof.prune(m, 0.5, structure="channel", recover="mean",
                  batches=[torch.randn(4, 3, 32, 32)])
    return m


@pytest.mark.parametrize("kind", ["dense", "zero", "mean", "channel"])
def test_onnx_matches_pytorch(kind, tmp_path):
    from pof.onnx_export import export_onnx, max_error

    model = _model(kind)
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    export_onnx(model, tmp_path / "m.onnx", torch.zeros(1, 3, 32, 32))
    assert not pruned_layers(model)  # made plain for export
    torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=1e-5)
    assert max_error(tmp_path / "m.onnx", model, x) < 1e-4


def test_folded_layer_equals_masked_layer():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 6, 3, padding=1, groups=2)
    pof.prune(torch.nn.Sequential(torch.nn.Identity(), conv), 0.6, recover="mean",
              keep_first_conv=False)
    x = torch.randn(2, 8, 9, 9)
    with torch.no_grad():
        ref = conv(x)
        folded = pof.fold(conv)
        assert (folded.weight == 0).float().mean() >= 0.6 - 1e-6  # stored sparse
        torch.testing.assert_close(folded(x), ref, atol=1e-5, rtol=1e-5)


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
    assert main(["export", str(tmp_path / "p" / "pruned.safetensors"), "--format", "onnx",
                 "--out", str(tmp_path / "m.onnx")]) == 0
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out
    assert main(["prune", str(src), "--structure", "channel", "--sparsity", "0.5",
                 "--pattern", "2:4", "--out", str(tmp_path / "q")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
