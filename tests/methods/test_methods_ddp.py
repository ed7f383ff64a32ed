"""Range and CrAM-style training under DDP (gloo, 2 processes): every rank draws the same
sparsities, and a DDP step equals the single-process step over the same two shards."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

import pof
from pof.training import TrainConfig, Trainer

STEPS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3),
                         nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 5))


def _shards(step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(100 + step)
    return [(torch.randn(8, 3, 10, 10, generator=g), torch.randint(0, 5, (8,), generator=g))
            for _ in range(2)]


def _method(kind: str, model: nn.Module) -> pof.Method:
    if kind == "range":
        return pof.OnTheFly(model, (0.3, 0.9), distill=0.5, refresh_every=1)
    return pof.CramStyle(model, (0.3, 0.9))


def _env(rank: int, world: int, port: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)


def _ddp_steps(rank: int, world: int, port: int, kind: str, dump: str) -> None:
    import torch.distributed as dist

    _env(rank, world, port)
    dist.init_process_group("gloo")
    model = _net()
    method = _method(kind, model)
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(STEPS):
        x, y = _shards(step)[rank]
        loss = method.loss(x, y, F.cross_entropy, model=ddp)
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step()
    torch.save({k: v.detach() for k, v in model.named_parameters()}, f"{dump}/rank{rank}.pt")
    dist.barrier()  # no rank tears gloo down while the other still uses it
    dist.destroy_process_group()


@pytest.mark.parametrize("kind", ["range", "cram"])
def test_ddp_step_equals_the_single_process_step_over_the_same_shards(tmp_path, kind):
    mp.spawn(_ddp_steps, args=(2, _free_port(), kind, str(tmp_path)), nprocs=2, join=True)
    model = _net()
    method = _method(kind, model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(STEPS):  # DDP averages the ranks' gradients: the mean of two losses
        loss = sum(method.loss(x, y, F.cross_entropy) for x, y in _shards(step)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step()
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    start = _net()
    _method(kind, start)  # the same parametrizations, untrained
    before = dict(start.named_parameters())
    for name, p in model.named_parameters():
        for got in ranks:
            torch.testing.assert_close(got[name], p.detach(), atol=1e-5, rtol=1e-5)
    assert any(not torch.allclose(p, before[n]) for n, p in model.named_parameters())


def _trainer_worker(rank: int, world: int, port: int, cfg: TrainConfig, dump: str) -> None:
    _env(rank, world, port)
    run = Trainer(cfg, resume=False)
    seen: list[float] = []
    pruned = run.method.sampler.pruned
    run.method.sampler.pruned = lambda s: (seen.append(s), pruned(s))[1]
    run.run()
    torch.save({"seen": seen, "weights": {k: v.detach().clone() for k, v in
                                          run.model.named_parameters()}},
               f"{dump}/rank{rank}.pt")


@pytest.mark.parametrize("penalty, extra", [("pof", {"subnet_distill": 1.0}), ("cram", {})])
def test_pof_train_runs_a_range_under_ddp_with_the_same_draws_on_every_rank(tmp_path, penalty,
                                                                            extra):
    cfg = TrainConfig(model="small_cnn", model_kwargs={"width": 8}, data="digits", epochs=1,
                      batch_size=64, lr=0.05, seed=0, workers=0, progress=False,
                      ckpt_every=1000, max_steps=6, device="cpu", penalty=penalty,
                      sparsity="0.3:0.9", out=str(tmp_path / "run"), **extra)
    mp.spawn(_trainer_worker, args=(2, _free_port(), cfg, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert len(r0["seen"]) == 6 and r0["seen"] == r1["seen"]
    assert r0["seen"][1] == r0["seen"][3] == 0.9  # the sandwich rule's top every other step
    for k, v in r0["weights"].items():
        assert torch.equal(v, r1["weights"][k]), k
    assert (tmp_path / "run" / "last.safetensors").is_file()
