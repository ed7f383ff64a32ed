"""Deploy steps as library calls: each ``pof`` command's work is one function a user can
call, with the same results and files as the command."""

from __future__ import annotations

import json

import pytest

import pof
from pof.cli import main
from pof.training import TrainConfig, train


@pytest.fixture(scope="module")
def range_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("wf") / "run"
    train(TrainConfig(model="small_cnn", model_kwargs={"width": 8}, data="digits", epochs=1,
                      batch_size=64, workers=0, progress=False, penalty="pof",
                      sparsity="0.3:0.9", out=str(out), max_steps=6))
    return out / "last.safetensors"


def test_prune_checkpoint_is_what_pof_prune_writes(range_ckpt, tmp_path, capsys):
    path = pof.prune_checkpoint(range_ckpt, tmp_path / "lib", 0.55, bn_recal=2)
    lib = capsys.readouterr().out
    assert main(["prune", str(range_ckpt), "--sparsity", "0.55", "--bn-recal", "2",
                 "--out", str(tmp_path / "cli")]) == 0
    cli = capsys.readouterr().out
    assert path == tmp_path / "lib" / "pruned.safetensors" and path.is_file()
    pick = [ln for ln in lib.splitlines() if ln.startswith("top1 before")]
    assert pick and pick == [ln for ln in cli.splitlines() if ln.startswith("top1 before")]
    model, meta = pof.load(path)
    assert meta["pruned"]["sparsity"] == 0.55 and meta["pruned"]["bn_recal_batches"] == 2
    assert pof.evaluate_checkpoint(path)["top1"] > 0
    with pytest.raises(pof.PofError, match="exactly one"):
        pof.prune_checkpoint(range_ckpt, tmp_path / "x")
    with pytest.raises(pof.PofError, match="recover"):
        pof.prune_checkpoint(range_ckpt, tmp_path / "x", 0.5, recover="median")


def test_sweep_export_and_finetune_are_library_calls(range_ckpt, tmp_path):
    rows = pof.sweep_checkpoints([range_ckpt], tmp_path / "sw", sparsities=(0.5, 0.8),
                                 recover=("mean",))
    assert {r["sparsity"] for r in rows if r["recover"] == "mean"} == {0.5, 0.8}
    assert json.loads((tmp_path / "sw" / "sweep.json").read_text()) == rows
    assert (tmp_path / "sw" / "sweep.png").is_file()
    pruned = pof.prune_checkpoint(range_ckpt, tmp_path / "p", 0.7, no_eval=True)
    small = pof.export_checkpoint(pruned, tmp_path / "small.safetensors")
    assert small.stat().st_size < pruned.stat().st_size
    run = pof.finetune_checkpoint(pruned, tmp_path / "ft", max_steps=2)
    assert (run / "last.safetensors").is_file()
