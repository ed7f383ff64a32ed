"""Training loop: learns, resumes exactly after a stop, and runs under DDP (gloo, 2 procs)."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

import pof
from pof.training.checkpoint import load_checkpoint, model_from_checkpoint, split
from pof.training.config import TrainConfig
from pof.training.loop import Trainer, train
from pof.training.schedule import lr_at


def _cfg(tmp_path, name, **kw):
    base = dict(model="small_cnn", model_kwargs={"width": 8}, data="digits", epochs=2,
                batch_size=64, lr=0.05, seed=3, workers=0, progress=False, ckpt_every=10,
                out=str(tmp_path / name))
    return TrainConfig(**{**base, **kw})


def _metrics(run_dir, kind="epoch"):
    """The run's epoch records (``kind=None``: every record, step records too)."""
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if kind is None or r.get("kind", "epoch") == kind]


def test_short_training_lowers_loss_and_writes_run_folder(tmp_path):
    out = train(_cfg(tmp_path, "a", epochs=3))
    m = _metrics(out)
    assert len(m) == 3 and m[-1]["train_loss"] < m[0]["train_loss"] < 2.31
    assert m[-1]["test_top1"] > 0.5
    for f in ("config.yaml", "metrics.jsonl", "last.safetensors", "final.safetensors",
              "report.md"):
        assert (out / f).is_file(), f


def test_pof_arm_lowers_pruned_energy(tmp_path):
    out = train(_cfg(tmp_path, "p", epochs=3, penalty="pof", sparsity=0.7, penalty_weight=5))
    m = _metrics(out)
    assert m[-1]["pruned_energy"] < m[0]["pruned_energy"]
    model, meta = model_from_checkpoint(out / "final.safetensors")
    assert pof.is_sphere(model.fc) and meta["config"]["penalty"] == "pof"


@pytest.mark.parametrize("penalty", ["none", "pof"])
def test_stop_and_resume_equals_uninterrupted(tmp_path, penalty):
    # bitwise equality is a CPU property: on a GPU, bf16 autocast and atomics-based kernels
    # make two uninterrupted runs differ too (seen on an H200: 2e-4 in fc.bias with pof)
    kw = dict(penalty=penalty, sparsity=0.6, penalty_refresh=7, device="cpu")
    full = train(_cfg(tmp_path, "full", **kw))
    stopped = _cfg(tmp_path, "part", max_steps=27, **kw)  # mid-epoch, mid refresh cycle
    train(stopped)
    assert load_checkpoint(tmp_path / "part" / "last.safetensors")[1]["step"] == 27
    resumed = train(_cfg(tmp_path, "part", **kw), resume=True)
    a = split(load_checkpoint(full / "final.safetensors")[0], "model")
    b = split(load_checkpoint(resumed / "final.safetensors")[0], "model")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["step"] for r in _metrics(resumed, None)] == [
        r["step"] for r in _metrics(full, None)]
    for a, b in zip(_metrics(resumed, None), _metrics(full, None), strict=True):
        assert (a["train_loss"], a["train_acc"]) == (b["train_loss"], b["train_acc"])


def test_resume_of_a_checkpoint_without_scheduler_state_keeps_the_schedule(tmp_path):
    """A checkpoint written before the scheduler's state was saved (meta without
    "schedule") resumes on the same learning-rate curve, not on a restarted one."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    full = train(_cfg(tmp_path, "full", warmup_epochs=1))
    train(_cfg(tmp_path, "old", max_steps=20, warmup_epochs=1))  # mid warm-up
    last = str(tmp_path / "old" / "last.safetensors")
    with safe_open(last, "pt") as f:
        header = f.metadata()
    meta = json.loads(header["pof"])
    meta.pop("schedule")
    save_file(load_file(last), last, metadata={**header, "pof": json.dumps(meta)})
    resumed = train(_cfg(tmp_path, "old", warmup_epochs=1), resume=True)
    lrs = [r["lr"] for r in _metrics(resumed)]
    assert lrs == pytest.approx([r["lr"] for r in _metrics(full)])
    a = split(load_checkpoint(full / "final.safetensors")[0], "model")
    b = split(load_checkpoint(resumed / "final.safetensors")[0], "model")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_without_checkpoint_starts_fresh_and_says_so(tmp_path, capsys):
    out = train(_cfg(tmp_path, "none", max_steps=3), resume=True)
    assert "nothing to resume" in capsys.readouterr().out
    assert load_checkpoint(out / "last.safetensors")[1]["step"] == 3


def test_lr_schedules():
    cfg = TrainConfig(lr=1.0, warmup_epochs=1)
    assert lr_at(cfg, 0, 100, 10) == pytest.approx(0.1)
    assert lr_at(cfg, 10, 100, 10) == pytest.approx(1.0)
    assert lr_at(cfg, 100, 100, 10) == pytest.approx(0.0, abs=1e-9)
    one = TrainConfig(lr=1.0, schedule="onecycle")
    assert lr_at(one, 30, 100, 10) == pytest.approx(1.0)
    assert lr_at(one, 0, 100, 10) < 0.1
    warm = TrainConfig(lr=1.0, schedule="onecycle", warmup_epochs=2)  # the rise: 20 steps
    assert lr_at(warm, 20, 100, 10) == pytest.approx(1.0)
    assert lr_at(warm, 10, 100, 10) == pytest.approx(0.52)


def test_scheduler_is_torch_lambda_lr_stepping_lr_at():
    from pof.training.schedule import make_scheduler

    cfg = TrainConfig(lr=1.0, warmup_epochs=1)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    sched = make_scheduler(opt, cfg, 100, 10)
    assert isinstance(sched, torch.optim.lr_scheduler.LambdaLR)
    for step in range(30):
        assert opt.param_groups[0]["lr"] == pytest.approx(lr_at(cfg, step, 100, 10))
        opt.step()
        sched.step()


def test_config_errors():
    with pytest.raises(ValueError, match="unknown config key"):
        TrainConfig.from_dict({"lr": 0.1, "lerning_rate": 1})
    with pytest.raises(ValueError, match="penalty"):
        TrainConfig(penalty="l2")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        TrainConfig(sparsity=1.2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, cfg: TrainConfig, dump: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    run = Trainer(cfg, resume=False)
    run.run()
    torch.save({k: v.detach().clone() for k, v in run.model.state_dict().items()},
               f"{dump}/rank{rank}.pt")


def test_ddp_two_processes_gloo(tmp_path):
    cfg = _cfg(tmp_path, "ddp", epochs=2, penalty="pof", sparsity=0.5, device="cpu")
    mp.spawn(_ddp_worker, args=(2, _free_port(), cfg, str(tmp_path)), nprocs=2, join=True)
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in w0:
        if "running" in k or "num_batches" in k:
            continue  # BatchNorm statistics are per rank (no SyncBN)
        assert torch.equal(w0[k], w1[k]), k
    m = _metrics(tmp_path / "ddp")
    assert len(m) == 2 and m[1]["train_loss"] < m[0]["train_loss"]


def test_resume_with_the_data_moved_continues_and_with_other_data_refuses(tmp_path,
                                                                          monkeypatch, capsys):
    """A run started on one machine resumes on another whose copy of the data lies
    elsewhere; a different data set at the new path is refused in one line."""
    import shutil

    import numpy as np
    from PIL import Image

    from pof.errors import ConfigError

    monkeypatch.setenv("POF_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for part in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "d1" / part / c).mkdir(parents=True)
            for i in range(8):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                    tmp_path / "d1" / part / c / f"{i}.png")
    shutil.copytree(tmp_path / "d1", tmp_path / "d2")
    shutil.copytree(tmp_path / "d1", tmp_path / "d3")
    Image.new("RGB", (8, 8), (255, 255, 255)).save(tmp_path / "d3" / "train" / "a" / "0.png")
    kw = dict(model_kwargs={"width": 4}, batch_size=4, epochs=1, ckpt_every=1)
    train(_cfg(tmp_path, "run", data=str(tmp_path / "d1"), max_steps=2, **kw))
    with pytest.raises(ConfigError, match=r"data was .*d1.*now .*d3.*mean differ"):
        Trainer(_cfg(tmp_path, "run", data=str(tmp_path / "d3"), **kw), resume=True)
    capsys.readouterr()
    out = train(_cfg(tmp_path, "run", data=str(tmp_path / "d2"), **kw), resume=True)
    said = capsys.readouterr().out
    assert "data moved from" in said and "resumed" in said
    assert load_checkpoint(out / "final.safetensors")[1]["step"] == 4
