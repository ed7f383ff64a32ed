"""Hostile inputs (issue 26): crafted checkpoint metadata for every key the reader
accepts, full / read-only / denied disks on every write path, an unwritable place, a
binary config: each is one line on stderr, exit code 2, nothing left behind. Also the
resume rule for a changed config and channel pruning without BatchNorm / twice. The case
table is ``bench/hostile_inputs.py``'s (which also measures peak memory per case)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
from helpers import one_line_exit_2

from pof.cli import main

SPEC = importlib.util.spec_from_file_location(
    "hostile_inputs", Path(__file__).parents[2] / "bench" / "hostile_inputs.py")
hostile = importlib.util.module_from_spec(SPEC)
sys.modules[SPEC.name] = hostile
SPEC.loader.exec_module(hostile)

META = hostile.metadata_cases()
CMDS = ["eval", "prune-channel", "export-onnx", "finetune", "train-init", "sweep"]


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    mp = pytest.MonkeyPatch()
    mp.setenv("POF_CACHE", str(d / "cache"))
    yield {**hostile.make_inputs(d / "in"), "dir": d}
    mp.undo()


def _tree(*roots: Path) -> dict[str, str]:
    return hostile._tree(*roots)


def _crafted(fx, cid: str, base: str, edit) -> Path:
    if base == "run":
        run = fx["dir"] / "runs" / cid
        if not run.exists():
            shutil.copytree(fx["run"], run)
            hostile.craft(fx["run"] / "last.safetensors", run / "last.safetensors", edit)
        return run
    path = fx["dir"] / "in" / f"{cid}.safetensors"
    if not path.exists():
        hostile.craft(fx["ok"], path, edit)
    return path


def _meta(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["pof"])


def test_every_key_the_reader_checks_is_fuzzed(fx):
    """Each key :mod:`pof.training.meta_check` checks is changed by at least one case."""
    import copy

    from pof.training.meta_check import CHECKS

    src = {"ok": _meta(fx["ok"]), "run": _meta(fx["run"] / "last.safetensors")}
    touched = set()
    for _, base, edit in META:
        new = edit(copy.deepcopy(src[base]))
        if isinstance(new, dict):
            touched |= {k for k in new.keys() | src[base].keys()
                        if new.get(k) != src[base].get(k)}
    assert set(CHECKS) <= touched, set(CHECKS) - touched
    assert len(META) >= 70


@pytest.mark.parametrize("cid,base,edit", META, ids=[c[0] for c in META])
def test_crafted_metadata_is_one_line_and_allocates_nothing(fx, tmp_path, capsys, cid, base,
                                                           edit):
    """Every crafted file is refused by `pof eval` (or `train --resume`) before a tensor is
    built from it: one line naming the file, exit 2, nothing written."""
    ckpt = _crafted(fx, cid, base, edit)
    name, argv = hostile._commands(str(ckpt), str(tmp_path / "o"), base)[0]
    argv = [a.replace("{ok}", str(fx["ok"])) for a in argv]
    before = _tree(tmp_path, ckpt)
    err = one_line_exit_2(argv, capsys)
    assert str(ckpt) in err, err
    assert _tree(tmp_path, ckpt) == before


MEMORY = hostile.MEMORY


@pytest.mark.parametrize("cmd", CMDS)
@pytest.mark.parametrize("cid", MEMORY)
def test_every_command_refuses_the_issues_crafted_files(fx, tmp_path, capsys, cid, cmd):
    """The files of the issue (36 GB widths, a 6.4 GB image size, strings / an empty list
    as sparsity range) through every command that reads a checkpoint."""
    base, edit = next((b, e) for c, b, e in META if c == cid)
    ckpt = _crafted(fx, cid, base, edit)
    argv = dict(hostile._commands(str(ckpt), str(tmp_path / "o"), base))[cmd]
    argv = [a.replace("{ok}", str(fx["ok"])) for a in argv]
    before = _tree(tmp_path, fx["dir"] / "in")
    err = one_line_exit_2(argv, capsys)
    assert str(ckpt) in err, err
    assert _tree(tmp_path, fx["dir"] / "in") == before


WRITES = hostile.write_cases()


@pytest.mark.parametrize("cid,fault,argv", WRITES, ids=[c[0] for c in WRITES])
def test_write_fault_is_one_line_and_leaves_nothing(fx, tmp_path, capsys, monkeypatch, cid,
                                                   fault, argv):
    """ENOSPC / EROFS / EACCES / ENOENT on every write path (simulated by a write wrapper),
    an unwritable place and a binary config: one line naming the path and the cause,
    exit 2, nothing new or changed in the output folder, the run or the inputs."""
    import builtins

    import pof.training.checkpoint as ckpt

    out, run = tmp_path / "out", tmp_path / "run"
    out.mkdir()
    shutil.copytree(fx["run"], run)
    monkeypatch.chdir(out)
    argv = [a.format(out=out, run=run, ok=fx["ok"], binary=fx["binary"]) for a in argv]
    root = run if str(run) in argv else out
    before = _tree(out, run, fx["dir"] / "in")
    if fault:
        monkeypatch.setattr(builtins, "open", builtins.open)  # restored after the test
        monkeypatch.setattr(ckpt, "save_file", ckpt.save_file)
        hostile.install_disk_fault(str(root), fault)
    err = one_line_exit_2(argv, capsys)
    if fault:
        import os

        assert os.strerror(hostile.FAULTS[fault]) in err, err
        assert str(root) in err, err
    assert _tree(out, run, fx["dir"] / "in") == before


def test_full_disk_mid_run_keeps_the_last_checkpoint(fx, tmp_path, capsys, monkeypatch):
    """A resumed run whose next checkpoint hits a full disk: one line, the old checkpoint
    and metrics stay, and resuming again once there is room continues."""
    import pof.training.checkpoint as ckpt

    run = tmp_path / "run"
    shutil.copytree(fx["run"], run)
    last = (run / "last.safetensors").read_bytes()
    monkeypatch.setattr(ckpt, "save_file", ckpt.save_file)
    real = ckpt.save_file

    def full(tensors, filename, metadata=None):
        from safetensors import SafetensorError

        raise SafetensorError("Error while serializing: I/O error: No space left on device "
                              "(os error 28)")

    monkeypatch.setattr(ckpt, "save_file", full)
    err = one_line_exit_2([*hostile.TRAIN, "--out", str(run), "--resume"], capsys)
    assert f"cannot write {run / 'last.safetensors'}: No space left on device" in err
    assert (run / "last.safetensors").read_bytes() == last
    assert not [p for p in run.iterdir() if ".tmp" in p.name]
    monkeypatch.setattr(ckpt, "save_file", real)
    assert main([*hostile.TRAIN, "--out", str(run), "--resume"]) == 0
    assert (run / "final.safetensors").is_file()


def test_resume_keeps_the_recorded_training_values(fx, tmp_path, capsys):
    """The rule: a resumed run uses its recorded lr (said in one line), not the edited
    config's; it ends as the run resumed with no edit does, and config.yaml stays true."""
    import yaml

    from pof.training.checkpoint import load_checkpoint

    runs = {}
    for name, lr in (("same", "0.1"), ("edited", "0.05")):
        run = tmp_path / name
        shutil.copytree(fx["run"], run)
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        cfg.update(lr=float(lr), max_steps=None, out=str(run))  # and train to the end
        (run / "edited.yaml").write_text(yaml.safe_dump(cfg))
        assert main(["train", "--config", str(run / "edited.yaml"), "--resume"]) == 0
        runs[name] = run
    out = capsys.readouterr().out
    assert out.count("resuming") == 1 and "recorded lr 0.1, not 0.05" in out
    a = load_checkpoint(runs["same"] / "final.safetensors")[0]
    b = load_checkpoint(runs["edited"] / "final.safetensors")[0]
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert yaml.safe_load((runs["edited"] / "config.yaml").read_text())["lr"] == 0.1
    rec = [json.loads(x) for x in (runs["edited"] / "metrics.jsonl").read_text().splitlines()]
    assert rec[-1]["lr"] < 0.1 and rec[-1]["lr"] == json.loads(
        (runs["same"] / "metrics.jsonl").read_text().splitlines()[-1])["lr"]


@pytest.mark.parametrize("twice", [False, True], ids=["no-batchnorm", "channel-pruned-again"])
def test_channel_pruning_says_what_mean_recovery_did(fx, tmp_path, capsys, twice):
    """Without BatchNorm the means go into biases, said with counts; a checkpoint whose
    channels were already removed is pruned from its current widths, said with its size."""
    from pof.training.checkpoint import model_from_checkpoint

    src = fx["nobn"] if not twice else fx["ok_channels"]
    argv = ["prune", str(src), "--structure", "channel", "--sparsity", "0.5", "--recover",
            "mean", "--data", "digits", "--no-eval", "--out", str(tmp_path / "p")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    if not twice:
        assert "running mean (0 layers)" in out and "no BatchNorm to re-estimate" in out
        assert "into the layer's bias (4 layers, 0 given a new bias)" in out
    else:
        assert "already had channels removed" in out and "of small_cnn's 2,294 parameters" in out
    before, _ = model_from_checkpoint(src)
    after, _ = model_from_checkpoint(tmp_path / "p" / "pruned.safetensors")
    if twice:  # fewer channels than the first pruning left, none more
        old, new = before.pof_widths, after.pof_widths
        outs = [(new[k]["out"], old[k]["out"]) for k in new if "out" in new[k]]
        assert all(a <= b for a, b in outs) and any(a < b for a, b in outs)
    n0, n1 = (sum(p.numel() for p in m.parameters()) for m in (before, after))
    assert n1 < n0 * 0.6


def test_mean_recovery_into_a_new_bias_keeps_the_outputs():
    """A layer with neither BatchNorm nor bias gets one, and the removed model computes
    what the masked one did."""
    import torch
    from torch import nn

    from pof.core.channel_masks import recovery_summary
    from pof.structured import prune_channels, remove_channels

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, bias=False), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, bias=False), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3, bias=False))
    x = torch.randn(16, 1, 8, 8)
    prune_channels(model, 0.5, x[:1], "mean", [x], 1)
    assert recovery_summary(model) == {"batchnorm": 0, "bias": 0, "new bias": 2}
    with torch.no_grad():
        masked = model(x)
        remove_channels(model)
        assert torch.allclose(model(x), masked, atol=1e-5)
    assert model[2].bias is not None and model[2].in_channels == 4
