"""One training loop for every arm: standard, L1, pof (sphere + penalty), fine-tuning.

Single process or DDP under ``torchrun`` (gloo on CPU, nccl on GPU). Each run writes to its
own folder: ``config.yaml``, ``metrics.jsonl``, ``last.safetensors`` (every
``ckpt_every`` steps and at each epoch end, atomically), ``final.safetensors`` and
``report.md``. ``resume=True`` continues from ``last.safetensors`` exactly: same weights,
optimizer, RNG, data order and penalty masks as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import nn
from torch.nn.utils import parametrize
from tqdm import tqdm

from .checkpoint import (
    CheckpointError,
    apply_structure,
    load_checkpoint,
    load_model_state,
    load_plain_weights,
    optimizer_state,
    save_checkpoint,
    split,
)
from .data import load_dataset, make_loader
from .gmp import GradualPruner
from .masks import check_range
from .models import create_model
from .penalty import FORMS, L1Penalty, PrunePenalty
from .sphere import sphere_layers, to_sphere
from .subnet import SubnetSampler

PENALTIES = ("none", "pof", "l1", "gmp", "cram")
SUBNETS = ("auto", "none", "split", "extra")
SCHEDULES = ("cosine", "onecycle", "constant")


@dataclass
class TrainConfig:
    """Everything a run needs; written to ``config.yaml`` in the run folder."""

    model: str = "resnet20"
    data: str = "digits"
    out: str = "runs/train"
    model_kwargs: dict = field(default_factory=dict)
    init: str | None = None  # weights to start from: pof checkpoint, .safetensors or .pt/.pth
    epochs: float = 10.0
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    penalty: str = "none"
    sparsity: float | list[float] | str = 0.5  # a target, or a range "lo:hi" / [lo, hi]
    penalty_weight: float = 20.0
    penalty_warmup: float = 0.0  # epochs over which the penalty weight ramps up from 0
    penalty_scope: str = "layer"
    penalty_refresh: int = 50
    penalty_beta: float = 0.1
    penalty_form: str = "sine"
    penalty_levels: int = 4
    structure: str = "weight"  # pof penalty on single weights or whole channels
    pattern: str | None = None  # pof penalty for an N:M prune, e.g. "2:4"
    subnet: str = "auto"
    gmp_start: float = 0.0
    gmp_end: float = 0.75
    gmp_every: int = 100
    l1_weight: float = 1e-5
    sphere: bool | None = None  # default: on for penalty=pof
    cosine: bool = False
    exclude: list[str] = field(default_factory=list)
    seed: int = 0
    ckpt_every: int = 500
    amp: bool = True
    channels_last: bool = True  # faster convs on CPU (~15% for ResNet-20) and on GPU
    workers: int = 4
    tensorboard: bool = False
    progress: bool = True
    max_steps: int | None = None  # stop (with a checkpoint) after this many steps in total
    device: str = "auto"

    def check(self) -> TrainConfig:
        """Validate values; raise ValueError naming the bad one."""
        if self.penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {PENALTIES}, got {self.penalty!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        self.sparsity = check_range(self.sparsity)
        if isinstance(self.sparsity, tuple):
            self.sparsity = list(self.sparsity)  # YAML-friendly
            if self.penalty in ("gmp", "l1", "none"):
                raise ValueError(f"a sparsity range needs penalty pof or cram, not "
                                 f"{self.penalty!r}; GMP trains for one target sparsity")
        if self.subnet not in SUBNETS:
            raise ValueError(f"subnet must be one of {SUBNETS}, got {self.subnet!r}")
        if self.penalty == "gmp":
            GradualPruner.check_schedule(self.gmp_start, self.gmp_end, self.gmp_every)
        if self.structure not in ("weight", "channel"):
            raise ValueError(f"structure must be weight or channel, got {self.structure!r}")
        if (self.structure == "channel" or self.pattern) and self.penalty != "pof":
            raise ValueError("structure channel / pattern N:M shape the pof penalty: use "
                             f"penalty pof, not {self.penalty!r}")
        if (self.structure == "channel" or self.pattern) and isinstance(self.sparsity, list):
            raise ValueError("structure channel / pattern N:M train for one sparsity, not a "
                             "range")
        if self.penalty_form not in FORMS:
            raise ValueError(f"penalty_form must be one of {FORMS}, got {self.penalty_form!r}")
        if not self.penalty_weight >= 0:
            raise ValueError(f"penalty_weight must be >= 0, got {self.penalty_weight!r}")
        for k in ("epochs", "batch_size", "lr", "ckpt_every"):
            if not getattr(self, k) > 0:
                raise ValueError(f"{k} must be > 0, got {getattr(self, k)!r}")
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(d) - names)
        if bad:
            raise ValueError(f"unknown config key(s): {', '.join(bad)} "
                             f"(known: {', '.join(sorted(names))})")
        return cls(**d)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> TrainConfig:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        d = yaml.safe_load(p.read_text()) or {}
        if not isinstance(d, dict):
            raise ValueError(f"{p}: a config must be a mapping of key: value")
        return cls.from_dict(d)


FIELD_HELP = {
    "model": "registered model name (see pof.list_models())",
    "data": "digits, an ImageFolder dir or .tar.gz, a CIFAR pickle dir, or an IDX dir",
    "out": "run folder (config, metrics, checkpoints, report)",
    "init": "start from these weights: a pof checkpoint, .safetensors or .pt/.pth state_dict",
    "epochs": "training length in epochs (fractions allowed)",
    "batch_size": "global batch size (split over DDP ranks)",
    "schedule": "learning-rate schedule: cosine, onecycle or constant",
    "warmup_epochs": "linear learning-rate warm-up",
    "penalty": "training method: none (standard), pof (sphere + pruning penalty), l1, gmp "
               "(gradual magnitude pruning) or cram (CrAM-style loss at a pruned point)",
    "sparsity": "target sparsity, a fraction in [0, 1); pof and cram also take a range "
                "lo:hi (one model for every sparsity in it)",
    "penalty_weight": "multiplier of the pof penalty",
    "penalty_levels": "pof with a sparsity range: nested pruned sets the penalty acts on",
    "structure": "pof penalty on single weights (weight) or whole channels (channel; "
                 "sparsity = fraction of channels), for `pof prune --structure`",
    "pattern": "pof penalty for an N:M prune (e.g. 2:4; sparsity is then 1 - N/M)",
    "subnet": "loss of the network pruned at a sampled sparsity: auto (split for a pof "
              "range, extra for cram), none, split (half of each batch) or extra (a "
              "second pass, twice the cost)",
    "gmp_start": "gmp: fraction of training where pruning starts",
    "gmp_end": "gmp: fraction of training where the target is reached (masks fixed after)",
    "gmp_every": "gmp: recompute the masks every this many steps",
    "penalty_warmup": "epochs over which the penalty weight ramps up from 0",
    "penalty_scope": "layer or global",
    "penalty_refresh": "re-select the to-be-pruned weights every this many steps",
    "penalty_beta": "weight of the margin term that keeps kept weights away from zero",
    "penalty_form": "energy (pruned-energy fraction) or sine (its square root, for high "
                    "sparsity)",
    "l1_weight": "L1 regularisation weight (penalty l1)",
    "sphere": "put weights on the unit sphere (default: on for penalty pof)",
    "cosine": "cosine layers: also normalise each receptive field of the input",
    "exclude": "comma-separated layer-name patterns pof leaves alone",
    "ckpt_every": "write last.safetensors every this many steps (and at each epoch end)",
    "amp": "bfloat16 autocast on GPU",
    "channels_last": "channels-last memory format (faster convolutions)",
    "workers": "data-loader worker processes (streaming data sets only)",
    "tensorboard": "also log to OUT/tb (needs the tensorboard package)",
    "progress": "show progress bars and per-epoch lines",
    "max_steps": "stop after this many steps in total (writes a checkpoint)",
    "device": "auto, cpu, cuda or cuda:N",
}


# ---------------------------------------------------------------- distributed helpers
def _dist_info() -> tuple[int, int, int]:
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(
            os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def _device(cfg: TrainConfig, local_rank: int) -> torch.device:
    if cfg.device != "auto":
        from .device import resolve_device

        return resolve_device(cfg.device)
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


# ---------------------------------------------------------------- model building
def build_model(cfg: TrainConfig, num_classes: int,
                input_size: tuple[int, int, int] | None = None,
                ) -> tuple[nn.Module, dict[str, Any]]:
    """The model for ``cfg``: from the registry, optional init weights, sphere if asked.

    A model that takes ``in_channels``/``image_size`` gets them from ``input_size`` (the
    data's C, H, W) unless ``cfg.model_kwargs`` sets them.
    """
    from .models import input_kwargs

    kwargs = {**(input_kwargs(cfg.model, input_size) if input_size else {}), **cfg.model_kwargs}
    arch = {"name": cfg.model, "num_classes": num_classes, "kwargs": kwargs}
    model = create_model(cfg.model, num_classes=num_classes, **kwargs)
    if cfg.init:
        path = Path(cfg.init)
        if path.suffix == ".safetensors" and _is_pof_checkpoint(path):
            tensors, meta = load_checkpoint(path)
            src = meta.get("arch", {})
            if src and (src.get("name"), src.get("num_classes")) != (cfg.model, num_classes):
                raise ValueError(
                    f"{path} holds {src.get('name')} with {src.get('num_classes')} classes, "
                    f"not {cfg.model} with {num_classes}")
            apply_structure(model, meta.get("structure", {}))
            load_model_state(model, split(tensors, "model"), str(path))
        else:
            state = load_plain_weights(path)
            dropped = _classifier_mismatch(model, state)
            for k in dropped:  # e.g. torchvision ImageNet weights on a 10-class head
                state.pop(k)
            res = model.load_state_dict(state, strict=False)
            bad = [k for k in res.missing_keys if k not in dropped] + res.unexpected_keys
            if bad:
                raise CheckpointError(f"{path}: weights do not fit {cfg.model}: "
                                      f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}")
            if dropped and int(os.environ.get("RANK", 0)) == 0:
                print(f"pof: {path}: kept the model's own {', '.join(dropped)} (shape differs)")
    sphere = cfg.penalty == "pof" if cfg.sphere is None else cfg.sphere
    if sphere and not sphere_layers(model):
        to_sphere(model, exclude=cfg.exclude or None, cosine=cfg.cosine)
    return model, arch


def _is_pof_checkpoint(path: Path) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return "pof" in (f.metadata() or {})
    except Exception:  # noqa: BLE001 - let the loader report the problem
        return True


def _classifier_mismatch(model: nn.Module, state: dict) -> list[str]:
    own = model.state_dict()
    return [k for k, v in state.items() if k in own and own[k].shape != v.shape]


# ---------------------------------------------------------------- schedule
def lr_at(cfg: TrainConfig, step: int, total: int, steps_per_epoch: int) -> float:
    """Learning rate at ``step`` of ``total`` (warm-up, then cosine / one-cycle / constant)."""
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "onecycle":
        peak = max(1, int(0.3 * total))
        if step < peak:
            return cfg.lr * (0.04 + 0.96 * step / peak)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - peak) / max(1, total - peak)))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant":
        return cfg.lr
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


# ---------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device | str = "cpu",
             progress: bool = False) -> dict[str, float]:
    """Top-1 / top-5 accuracy (fractions) and mean cross-entropy over ``loader``."""
    was = model.training
    model.eval()
    n = correct1 = correct5 = 0
    loss = 0.0
    with parametrize.cached():
        for x, y in tqdm(loader, desc="eval", leave=False, disable=not progress):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            out = model(x).float()
            loss += F.cross_entropy(out, y, reduction="sum").item()
            top = out.topk(min(5, out.shape[1]), dim=1).indices
            correct1 += (top[:, 0] == y).sum().item()
            correct5 += (top == y[:, None]).any(1).sum().item()
            n += len(y)
    model.train(was)
    return {"top1": correct1 / max(n, 1), "top5": correct5 / max(n, 1), "loss": loss / max(n, 1)}


# ---------------------------------------------------------------- the loop
class _Run:
    """State of one training run (kept small so the loop below stays readable)."""

    def __init__(self, cfg: TrainConfig, resume: bool, on_epoch=None) -> None:
        self.cfg = cfg.check()
        self.on_epoch = on_epoch
        self.rank, self.world, local = _dist_info()
        if self.world > 1 and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo"
            dist.init_process_group(backend)
        self.device = _device(cfg, local)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.main = self.rank == 0
        self.out = Path(cfg.out)
        torch.manual_seed(cfg.seed)
        self.train_ds = load_dataset(cfg.data, "train", progress=cfg.progress and self.main)
        self.test_ds = _test_split(cfg.data, cfg.progress and self.main)
        spec = self.train_ds.spec
        self.model, self.arch = build_model(cfg, spec.num_classes, spec.image_size)
        self.model.to(self.device)
        self.fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.fmt)
        self.steps_per_epoch = len(self._loader(0))
        self.total = max(1, int(round(cfg.epochs * self.steps_per_epoch)))
        self.penalty = self._make_penalty()
        self.gmp = self._make_gmp()
        self.subnet, self.subnet_mode = self._make_subnet()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                   nesterov=cfg.nesterov and cfg.momentum > 0,
                                   weight_decay=cfg.weight_decay)
        self.step = 0
        self.metrics: list[dict] = []
        if resume:
            self._resume()
        elif self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "metrics.jsonl").write_text("")
        if self.main:
            (self.out / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg)))
        self.ddp = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.tb = self._tensorboard()

    def _make_penalty(self) -> nn.Module | None:
        cfg = self.cfg
        ex = cfg.exclude or None
        if cfg.penalty == "pof" and cfg.penalty_weight > 0:  # weight 0: sphere (+ subnet) only
            x = torch.zeros(1, *self.train_ds.spec.image_size, device=self.device)
            return PrunePenalty(self.model, None if cfg.pattern else cfg.sparsity,
                                cfg.penalty_scope, cfg.penalty_weight,
                                beta=cfg.penalty_beta, refresh_every=cfg.penalty_refresh,
                                exclude=ex, form=cfg.penalty_form, levels=cfg.penalty_levels,
                                structure=cfg.structure, pattern=cfg.pattern, example_inputs=x)
        if cfg.penalty == "l1":
            return L1Penalty(self.model, cfg.l1_weight, exclude=ex)
        return None

    def _make_gmp(self) -> GradualPruner | None:
        cfg = self.cfg
        if cfg.penalty != "gmp":
            return None
        return GradualPruner(self.model, cfg.sparsity, self.total, cfg.gmp_start, cfg.gmp_end,
                             cfg.gmp_every, cfg.penalty_scope, exclude=cfg.exclude or None)

    def _make_subnet(self) -> tuple[SubnetSampler | None, str]:
        cfg = self.cfg
        mode = cfg.subnet
        if mode == "auto":
            ranged = isinstance(cfg.sparsity, list)
            mode = {"cram": "extra", "pof": "split" if ranged else "none"}.get(cfg.penalty,
                                                                              "none")
        if mode == "none":
            return None, mode
        if self.world > 1:
            raise ValueError("subnet training (a pof range, cram) runs in one process; "
                             "DDP is not supported for it yet")
        recover = "mean" if cfg.penalty == "pof" else "zero"
        return SubnetSampler(self.model, cfg.sparsity, recover, cfg.seed,
                             exclude=cfg.exclude or None), mode

    def _loader(self, epoch: int):
        dist_arg = (self.rank, self.world) if self.world > 1 else None
        return make_loader(self.train_ds, self.cfg.batch_size // self.world, train=True,
                           seed=self.cfg.seed, epoch=epoch, distributed=dist_arg,
                           num_workers=self.cfg.workers)

    def _tensorboard(self):
        if not (self.cfg.tensorboard and self.main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("pof: tensorboard is not installed (pip install tensorboard); not logging")
            return None
        return SummaryWriter(str(self.out / "tb"))

    # -- checkpoints
    def meta(self) -> dict[str, Any]:
        spec = self.train_ds.spec
        return {"arch": self.arch, "step": self.step, "epoch": self.step / self.steps_per_epoch,
                "data": {"source": self.cfg.data, "mean": list(spec.mean), "std": list(spec.std),
                         "image_size": list(spec.image_size), "classes": list(spec.classes)},
                "config": dataclasses.asdict(self.cfg), "penalty_calls":
                getattr(self.penalty, "calls", 0)}

    def save(self, name: str = "last.safetensors") -> None:
        if not self.main:
            return
        extra = {"rng.torch": torch.get_rng_state()}
        if isinstance(self.penalty, PrunePenalty) and self.penalty._masks is not None:
            extra.update({f"penalty.{i}": m for i, m in enumerate(self.penalty._masks)})
        save_checkpoint(self.out / name, self.model, self.meta(), self.opt, extra)

    def _resume(self) -> None:
        path = self.out / "last.safetensors"
        if not path.is_file():
            raise CheckpointError(f"nothing to resume: {path} does not exist")
        tensors, meta = load_checkpoint(path)
        load_model_state(self.model, split(tensors, "model"), str(path))
        self.opt.load_state_dict(optimizer_state(tensors, meta))
        self.step = int(meta["step"])
        extra = split(tensors, "extra")
        torch.set_rng_state(extra["rng.torch"])
        if isinstance(self.penalty, PrunePenalty):
            masks = [extra[f"penalty.{i}"] for i in range(len(self.penalty.names))
                     if f"penalty.{i}" in extra]
            if masks:
                self.penalty.load_masks(masks)
            self.penalty.calls = int(meta.get("penalty_calls", 0))
        lines = (self.out / "metrics.jsonl").read_text().splitlines() if self.main else []
        self.metrics = [json.loads(ln) for ln in lines if ln.strip()]
        self.metrics = [m for m in self.metrics if m["step"] <= self.step]
        if self.main:
            (self.out / "metrics.jsonl").write_text(
                "".join(json.dumps(m) + "\n" for m in self.metrics))
            print(f"pof: resumed {path} at step {self.step}")

    # -- one epoch
    def penalty_scale(self) -> float:
        warm = self.cfg.penalty_warmup * self.steps_per_epoch
        return 1.0 if warm <= 0 else min(1.0, self.step / warm)

    def train_epoch(self, epoch: int) -> dict[str, float] | None:
        cfg, model = self.cfg, self.ddp
        model.train()
        loader = self._loader(epoch)
        skip = self.step - epoch * self.steps_per_epoch
        sums = {"loss": 0.0, "penalty": 0.0, "correct": 0, "n": 0}
        bar = tqdm(total=self.steps_per_epoch, initial=skip, disable=not (cfg.progress and
                   self.main), desc=f"epoch {epoch + 1}/{math.ceil(cfg.epochs)}", leave=False)
        for i, (x, y) in enumerate(loader):
            if i < skip:
                continue  # resuming mid-epoch: same batches, same augmentation
            if self.step >= self.total:
                break
            out, loss, pen = self.train_step(x, y)
            sums["loss"] += loss.item() * len(y)
            sums["penalty"] += (pen.item() if pen is not None else 0.0) * len(y)
            sums["correct"] += (out.argmax(1) == y).sum().item()
            sums["n"] += len(y)
            n = sums["n"]
            bar.update(1)
            post = {"loss": f"{sums['loss'] / n:.3f}", "acc": f"{sums['correct'] / n:.3f}"}
            if pen is not None:
                post["pen"] = f"{sums['penalty'] / n:.4f}"
            bar.set_postfix(post)
            if self.step % cfg.ckpt_every == 0:
                self.save()
            if cfg.max_steps is not None and self.step >= cfg.max_steps:
                self.save()
                bar.close()
                return None
        bar.close()
        n = max(sums["n"], 1)
        return {"train_loss": sums["loss"] / n, "train_penalty": sums["penalty"] / n,
                "train_acc": sums["correct"] / n}

    def train_step(self, x: torch.Tensor, y: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One optimizer step on a batch: ``(logits, task loss, penalty or None)``."""
        cfg = self.cfg
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.fmt)
        y = y.to(self.device, non_blocking=True)
        for g in self.opt.param_groups:
            g["lr"] = lr_at(cfg, self.step, self.total, self.steps_per_epoch)
        self.opt.zero_grad(set_to_none=True)
        amp = cfg.amp and self.device.type == "cuda"
        with parametrize.cached(), torch.autocast("cuda", torch.bfloat16, enabled=amp):
            out, loss = self._forward_loss(self.ddp, x, y)
            pen = self.penalty() * self.penalty_scale() if self.penalty is not None else None
            total = loss if pen is None else loss + pen
        total.backward()
        self.opt.step()
        self.step += 1
        if self.gmp is not None:
            self.gmp.update(self.step)
        return out, loss, pen

    def _forward_loss(self, model: nn.Module, x: torch.Tensor,
                      y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and task loss of one batch, with the pruned-subnetwork term if any."""
        ls = self.cfg.label_smoothing
        if self.subnet is None:
            out = model(x)
            return out, F.cross_entropy(out.float(), y, label_smoothing=ls)
        s = self.subnet.sample(self.step)
        if self.subnet_mode == "split":  # half dense, half pruned: the cost of one pass
            h = len(x) // 2
            dense, pruned = model(x[:h]), self.subnet.forward(x[h:], s)
            out = torch.cat([dense, pruned])
            return out, F.cross_entropy(out.float(), y, label_smoothing=ls)
        out = model(x)  # extra: the whole batch dense and pruned (CrAM+), twice the cost
        pruned = self.subnet.forward(x, s)
        return out, (F.cross_entropy(out.float(), y, label_smoothing=ls)
                     + F.cross_entropy(pruned.float(), y, label_smoothing=ls))

    def run(self) -> Path:
        cfg = self.cfg
        t0 = time.time()
        epochs = math.ceil(cfg.epochs)
        epoch = self.step // self.steps_per_epoch
        while epoch < epochs and self.step < self.total:
            stats = self.train_epoch(epoch)
            if stats is None:  # max_steps reached
                self._finish_dist()
                return self.out
            epoch += 1
            if self.main:
                rec = {"epoch": epoch, "step": self.step, **stats,
                       **{f"test_{k}": v for k, v in self._test().items()},
                       "lr": self.opt.param_groups[0]["lr"], "time_s": round(time.time() - t0, 1)}
                if isinstance(self.penalty, PrunePenalty):
                    rec["pruned_energy"] = self.penalty.pruned_energy().item()
                    if len(self.penalty.levels) > 1:
                        rec["level_energy"] = self.penalty.level_energies()
                if self.gmp is not None:
                    rec["gmp_sparsity"] = self.gmp.target(self.step)
                self.metrics.append(rec)
                with open(self.out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")
                if self.tb is not None:
                    for k, v in rec.items():
                        self.tb.add_scalar(k, v, self.step)
                if cfg.progress:
                    tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in rec.items()))
                if self.on_epoch is not None:
                    self.on_epoch(rec)
            self.save()
            self._barrier()
        if self.main:
            self.save("final.safetensors")
            self._report()
        self._finish_dist()
        return self.out

    def _test(self) -> dict[str, float]:
        loader = make_loader(self.test_ds, 256, train=False, num_workers=self.cfg.workers)
        return evaluate(self.model, loader, self.device)

    def _report(self) -> None:
        from .sparsity import sparsity_report

        last = self.metrics[-1] if self.metrics else {}
        lines = [f"# pof train: {self.cfg.model} on {self.cfg.data}", "",
                 f"- penalty: {self.cfg.penalty} (sparsity target {self.cfg.sparsity})",
                 f"- steps: {self.step}, epochs: {self.cfg.epochs}, seed: {self.cfg.seed}",
                 f"- final test top-1: {100 * last.get('test_top1', float('nan')):.2f}%", "",
                 "```", str(sparsity_report(self.model)), "```", ""]
        (self.out / "report.md").write_text("\n".join(lines))

    def _barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def _finish_dist(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def _test_split(data: str, progress: bool):
    from .data import DataError

    try:
        return load_dataset(data, "test", progress=progress)
    except DataError as e:
        if "split" not in str(e):
            raise
        return load_dataset(data, "val", progress=progress)


def train(cfg: TrainConfig, resume: bool = False,
          on_epoch: Callable[[dict], None] | None = None) -> Path:
    """Train as ``cfg`` says (resuming from ``cfg.out`` if asked); return the run folder.

    ``on_epoch`` is called on the main process with each epoch's metrics record.
    """
    return _Run(cfg, resume, on_epoch).run()

