"""--device on every subcommand that runs a model: the CPU path, errors, and CUDA if present."""

from __future__ import annotations

import re

import pytest
import torch

import pof
from pof.cli import main
from pof.cli.parser import build_parser
from pof.errors import ConfigError
from pof.training.distributed import pick_device

CUDA = torch.cuda.is_available()


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if CUDA else "cpu")
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        pick_device("gpu0")
    if not CUDA:
        with pytest.raises(ConfigError, match="CUDA is not available"):
            pick_device("cuda")
    else:  # torch.cuda.set_device needs an index: plain "cuda" gets this process's GPU
        assert pick_device("cuda") == torch.device("cuda", 0)


def test_plain_cuda_is_this_ranks_gpu(monkeypatch):
    """Found on an H200: torch.cuda.set_device("cuda") fails without an index."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("cuda") == torch.device("cuda", 0)
    assert pick_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="only 2 CUDA"):
        pick_device("cuda", local_rank=2)


@pytest.mark.parametrize("argv", [
    ["train"], ["eval", "c"], ["prune", "c", "--sparsity", "0.5", "--out", "o"], ["sweep", "c"],
    ["finetune", "c"], ["demo"]])
def test_every_model_command_takes_device(argv):
    args = build_parser().parse_args([*argv, "--device", "cpu"])
    assert args.device == "cpu"
    if argv[0] not in ("train", "finetune"):  # those default to the config's "auto"
        assert build_parser().parse_args(argv).device == "auto"


def test_a_malformed_device_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "c", "--device", "gpu0"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "device must be auto, cpu, cuda, cuda:N or mps" in err


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("dev") / "run"
    assert main(["train", "--model", "small_cnn", "--data", "digits", "--max-steps", "2",
                 "--penalty", "pof", "--out", str(out), "--device", "cpu",
                 "--progress", "false"]) == 0
    return out / "last.safetensors"


def test_cpu_path_runs_and_records_the_device(ckpt, tmp_path, capsys):
    assert "device: cpu" in (ckpt.parent / "config.yaml").read_text()
    assert main(["eval", str(ckpt), "--device", "cpu"]) == 0
    assert re.search(r"^top1 \d+\.\d\d%", capsys.readouterr().out, re.M)  # after the data note
    assert main(["prune", str(ckpt), "--sparsity", "0.5", "--bn-recal", "2", "--out",
                 str(tmp_path / "p"), "--device", "cpu"]) == 0
    assert "global:" in capsys.readouterr().out


@pytest.mark.skipif(CUDA, reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_a_one_line_error(ckpt, capsys):
    assert main(["eval", str(ckpt), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CUDA is not available" in err


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_cuda_path_matches_cpu(ckpt, tmp_path, capsys):
    results = {}
    for dev in ("cpu", "cuda"):
        assert main(["eval", str(ckpt), "--device", dev]) == 0
        results[dev] = float(capsys.readouterr().out.split()[1].rstrip("%"))
        assert main(["prune", str(ckpt), "--sparsity", "0.5", "--recover", "mean",
                     "--bn-recal", "2", "--permanent", "--out", str(tmp_path / dev),
                     "--device", dev]) == 0
        assert main(["eval", str(tmp_path / dev / "pruned.safetensors"), "--device", dev]) == 0
        results[dev + "_pruned"] = float(capsys.readouterr().out.split()[1].rstrip("%"))
    assert abs(results["cpu"] - results["cuda"]) < 0.5
    assert abs(results["cpu_pruned"] - results["cuda_pruned"]) < 1.0
    assert main(["sweep", str(ckpt), "--sparsities", "0.5", "--out", str(tmp_path / "s"),
                 "--device", "cuda", "--bn-recal", "2"]) == 0
    assert main(["finetune", str(tmp_path / "cuda" / "pruned.safetensors"), "--epochs", "0.2",
                 "--out", str(tmp_path / "ft"), "--device", "cuda", "--progress", "false"]) == 0
    assert "device: cuda" in (tmp_path / "ft" / "config.yaml").read_text()
    assert main(["train", "--model", "vit_tiny", "--data", "digits", "--epochs", "0.2",
                 "--penalty", "pof", "--out", str(tmp_path / "vit"), "--device", "cuda",
                 "--progress", "false"]) == 0


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_library_on_cuda_transformer():
    model = pof.create_model("vit_tiny", dim=32, depth=2, heads=2, image_size=16).cuda().eval()
    x = torch.randn(4, 3, 16, 16, device="cuda")
    with torch.no_grad():
        ref = model(x)
    pof.to_sphere(model)
    penalty = pof.PrunePenalty(model, 0.7, form="sine")
    penalty().backward()
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, atol=1e-4, rtol=1e-4)
        pof.prune(model, 0.7, recover="mean")
        pruned = model(x)
        pof.remove(model)  # GPU kernels (TF32 convolutions) are not bitwise reproducible
        torch.testing.assert_close(model(x), pruned, atol=1e-3, rtol=1e-3)
