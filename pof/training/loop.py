"""One training loop for every arm: standard, L1, pof (sphere + penalty), fine-tuning.

Single process or DDP under ``torchrun``. Everything that can be checked (config, data,
model, the output folder, class counts, that the model takes the data) is checked before
anything is written; a start that fails leaves the output folder as it was. Each run
writes to its own folder: ``config.yaml``, ``metrics.jsonl``, ``last.safetensors`` (every
``ckpt_every`` steps and at each epoch end, atomically), ``final.safetensors`` and
``report.md``. ``resume=True`` continues from ``last.safetensors`` exactly: same weights,
optimizer, schedule, RNG, data order, penalty masks and epoch statistics as an
uninterrupted run; with no checkpoint there yet it starts fresh and says so.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from tqdm import tqdm

from ..core.parametrizations import plain_copy
from ..data import ArrayDataset, load_dataset, make_loader
from ..data.provenance import data_difference, spec_summary
from ..errors import ConfigError, DataError
from .build import build_model
from .checkpoint import (
    load_checkpoint,
    load_model_state,
    optimizer_state,
    read_meta,
    save_checkpoint,
    split,
)
from .config import TrainConfig
from .distributed import setup
from .evaluate import check_model_takes, evaluate, held_out_split
from .method_config import method_for
from .progress import log_step
from .report import write_report
from .run_dir import (
    append_metrics,
    check_out_dir,
    outputs,
    read_metrics,
    write_config,
    write_metrics,
)
from .schedule import make_scheduler

# a resumed run must agree with the checkpoint on these (anything else may change)
RESUME_KEYS = ("model", "model_kwargs", "data", "seed", "epochs", "batch_size", "penalty",
               "sparsity", "structure", "pattern", "penalty_ramp")
# values whose default (None) is resolved at the start: a resume keeps the recorded ones
RECORDED_DEFAULTS = ("penalty_form", "penalty_weight")


class Trainer:
    """One training run: set up and checked in ``__init__``, trained by :meth:`run`."""

    def __init__(self, cfg: TrainConfig, resume: bool = False,
                 on_epoch: Callable[[dict], None] | None = None) -> None:
        self.out = check_out_dir(cfg.out)
        last = self.out / "last.safetensors"
        if resume:  # a resumed run keeps the values it recorded where none is given now
            cfg = _recorded_defaults(last, cfg)
        cfg = cfg.resolved()  # measured defaults made concrete: what config.yaml records
        self.cfg, self.on_epoch = cfg, on_epoch
        self.proc = setup(cfg.device)
        self.device, self.main = self.proc.device, self.proc.main
        moved = _check_resumable(last, cfg) if resume else None
        torch.manual_seed(cfg.seed)
        show = cfg.progress and self.main
        self.train_ds = load_dataset(cfg.data, "train", progress=show)
        self.test_ds = held_out_split(cfg.data, show)
        spec = self.train_ds.spec
        _check_classes(cfg.data, spec.num_classes, self.test_ds.spec.num_classes)
        self.model, self.arch = build_model(cfg, spec.num_classes, self.log, spec.image_size)
        self.model.to(self.device)
        if isinstance(self.train_ds, ArrayDataset) and self.device.type == "cuda":
            self.train_ds.to(self.device)  # small data sets live on the GPU
            self.test_ds.to(self.device)
        self.fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.fmt)
        check_model_takes(self.model, self.test_ds, cfg.model, self.device)
        self.steps_per_epoch = len(self._loader(0))
        if moved:
            self.log(_check_same_data(last, moved, cfg.data, spec, self.steps_per_epoch))
        self.total = max(1, int(round(cfg.epochs * self.steps_per_epoch)))
        # the frozen teacher of subnet_teacher init: the model as it starts (the --init
        # weights), taken before a resumed run loads its own
        teacher = plain_copy(self.model) if cfg.subnet_teacher == "init" else None
        self.method = method_for(cfg, self.model, self.total, self.steps_per_epoch,
                                 self._channel_plan, teacher).to(self.device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                   nesterov=cfg.nesterov and cfg.momentum > 0,
                                   weight_decay=cfg.weight_decay)
        self.sched = make_scheduler(self.opt, cfg, self.total, self.steps_per_epoch)
        self.step = 0
        self.sums = _zero_sums()
        self.metrics: list[dict] = []
        self.resumed = resume and self._resume()
        self.ddp = self.model
        if self.proc.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.tb = None

    def log(self, msg: str) -> None:
        if self.main:
            print(msg)

    def _channel_plan(self):
        """Channel groups for ``structure: channel`` (traced on one input), else None."""
        if self.cfg.structure != "channel":
            return None
        from ..structured import channel_groups

        x = torch.zeros(1, *self.train_ds.spec.image_size, device=self.device)
        return channel_groups(self.model, x)

    def _loader(self, epoch: int):
        world = self.proc.world
        return make_loader(self.train_ds, self.cfg.batch_size // world, train=True,
                           seed=self.cfg.seed, epoch=epoch,
                           distributed=(self.proc.rank, world) if world > 1 else None,
                           num_workers=self.cfg.workers)

    # -- checkpoints
    def meta(self) -> dict[str, Any]:
        spec = self.train_ds.spec
        return {"arch": self.arch, "step": self.step, "epoch": self.step / self.steps_per_epoch,
                "data": {"source": self.cfg.data, "mean": list(spec.mean), "std": list(spec.std),
                         "image_size": list(spec.image_size), "classes": list(spec.classes)},
                "config": dataclasses.asdict(self.cfg), "schedule": self.sched.state_dict(),
                "epoch_sums": self.sums, "method": self.method.name,
                "method_state": {k: v for k, v in self.method.state_dict().items()
                                 if not isinstance(v, torch.Tensor)}}

    def save(self, name: str = "last.safetensors") -> None:
        if not self.main:
            return
        extra = {"rng.torch": torch.get_rng_state()}
        extra.update({k: v for k, v in self.method.state_dict().items()
                      if isinstance(v, torch.Tensor)})
        save_checkpoint(self.out / name, self.model, self.meta(), self.opt, extra)

    def _resume(self) -> bool:
        """Continue from ``last.safetensors``; False (and a note) when there is none yet."""
        path = self.out / "last.safetensors"
        if not path.is_file():
            self.log(f"pof: nothing to resume in {self.out} yet; starting a fresh run")
            return False
        tensors, meta = load_checkpoint(path)
        load_model_state(self.model, split(tensors, "model"), str(path))
        self.opt.load_state_dict(optimizer_state(tensors, meta))
        self.step = int(meta["step"])
        if "schedule" in meta:
            self.sched.load_state_dict(meta["schedule"])
        else:  # written before the scheduler's state was saved: continue at its step
            self.sched.last_epoch = self.step
        self.sums = {**_zero_sums(), **meta.get("epoch_sums", {})}
        extra = split(tensors, "extra")
        torch.set_rng_state(extra["rng.torch"])
        # checkpoints before methods were objects kept the penalty's calls in the meta
        old = {"steps": self.step, "penalty_calls": meta.get("penalty_calls", 0)}
        self.method.load_state_dict({**old, **extra, **meta.get("method_state", {})})
        if self.main:
            self.metrics = read_metrics(self.out / "metrics.jsonl", self.step, self.log)
            self.log(f"pof: resumed {path} at step {self.step}")
        return True

    # -- the run
    def _start(self) -> None:
        """Write the run folder's first files; undo them all if that fails."""
        if not self.main:
            return
        names = () if self.resumed else ("config.yaml", "metrics.jsonl")
        with outputs(self.out, *names):
            self.out.mkdir(parents=True, exist_ok=True)
            write_metrics(self.out / "metrics.jsonl", self.metrics)
            write_config(self.out, dataclasses.asdict(self.cfg))
            self.tb = self._tensorboard()

    def _tensorboard(self):
        if not self.cfg.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.log("pof: tensorboard is not installed (pip install tensorboard); not logging")
            return None
        return SummaryWriter(str(self.out / "tb"))

    def train_epoch(self, epoch: int) -> bool:
        """Train until the epoch ends (True) or ``max_steps`` is reached (False)."""
        cfg, model, sums = self.cfg, self.ddp, self.sums
        model.train()
        skip = self.step - epoch * self.steps_per_epoch
        bar = tqdm(total=self.steps_per_epoch, initial=skip, leave=False,
                   disable=None if cfg.progress and self.main else True,  # None: TTYs only
                   desc=f"epoch {epoch + 1}/{math.ceil(cfg.epochs)}")
        with bar:
            for i, (x, y) in enumerate(self._loader(epoch)):
                if i < skip:
                    continue  # resuming mid-epoch: same batches, same augmentation
                if self.step >= self.total:
                    break
                out, loss, pen = self.train_step(x, y)
                sums["loss"] += loss.item() * len(y)
                sums["penalty"] += (pen or 0.0) * len(y)
                sums["correct"] += (out.argmax(1) == y.to(out.device)).sum().item()
                sums["n"] += len(y)
                bar.update(1)
                n = sums["n"]
                bar.set_postfix({"loss": f"{sums['loss'] / n:.3f}",
                                 "acc": f"{sums['correct'] / n:.3f}"})
                log_step(self, bar)  # metrics.jsonl every log_every steps; a line off a TTY
                if self.step % cfg.ckpt_every == 0:
                    self.save()
                if cfg.max_steps is not None and self.step >= cfg.max_steps:
                    self.save()
                    return False
        return True

    def train_step(self, x: torch.Tensor, y: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, float | None]:
        """One optimizer step on a batch: ``(logits, task loss, penalty or None)``."""
        cfg = self.cfg
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.fmt)
        y = y.to(self.device, non_blocking=True)
        self.opt.zero_grad(set_to_none=True)
        amp = cfg.amp and self.device.type == "cuda"
        with parametrize.cached(), torch.autocast("cuda", torch.bfloat16, enabled=amp):
            out, total = self.method.forward_loss(x, y, self._task_loss, self.ddp)
        total.backward()
        self.lr = self.opt.param_groups[0]["lr"]
        self.opt.step()
        self.sched.step()
        self.step += 1
        self.method.after_step()
        pen = self.method.last_regularizer
        return out, total if pen is None else total - pen, pen

    def _task_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.float(), y, label_smoothing=self.cfg.label_smoothing)

    def _end_epoch(self, epoch: int, t0: float) -> None:
        n = max(self.sums["n"], 1)
        rec = {"epoch": epoch, "step": self.step, "train_loss": self.sums["loss"] / n,
               "train_penalty": self.sums["penalty"] / n,
               "train_acc": self.sums["correct"] / n,
               **{f"test_{k}": v for k, v in self._test().items()},
               "lr": self.lr, "time_s": round(time.time() - t0, 1)}
        rec.update(self.method.logs())
        self.metrics.append(rec)
        append_metrics(self.out / "metrics.jsonl", rec)
        if self.tb is not None:
            for k, v in rec.items():
                self.tb.add_scalar(k, v, self.step)
        if self.cfg.progress:
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in rec.items()))
        if self.on_epoch is not None:
            self.on_epoch(rec)

    def run(self) -> Path:
        """Train to the end (or ``max_steps``); return the run folder."""
        self._start()
        t0 = time.time()
        self.lr = self.opt.param_groups[0]["lr"]
        epoch = self.step // self.steps_per_epoch
        try:
            while epoch < math.ceil(self.cfg.epochs) and self.step < self.total:
                if not self.train_epoch(epoch):  # max_steps reached
                    if self.main:
                        print(f"pof: stopped at step {self.step} of {self.total} "
                              f"(--max-steps); {self.out / 'last.safetensors'} holds it, "
                              "the same command with --resume continues it")
                    return self.out
                epoch += 1
                if self.main:
                    self._end_epoch(epoch, t0)
                self.sums = _zero_sums()
                self.save()
                self.proc.barrier()
            if self.main:
                self.save("final.safetensors")
                write_report(self.out / "report.md", self.cfg, self.step, self.metrics,
                             self.model)
        finally:
            if self.tb is not None:
                self.tb.close()
            self.proc.finish()
        return self.out

    def _test(self) -> dict[str, float]:
        loader = make_loader(self.test_ds, 256, train=False, num_workers=self.cfg.workers)
        return evaluate(self.model, loader, self.device)


def _recorded_defaults(path: Path, cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with each value left to its default (None) taken from the run's checkpoint,
    so that a resumed run cannot switch to defaults that changed since it started."""
    if not path.is_file():
        return cfg
    old = read_meta(path).get("config") or {}
    unset = {f.name: old[f.name] for f in dataclasses.fields(cfg)
             if getattr(cfg, f.name) is None and old.get(f.name) is not None
             and f.name in RECORDED_DEFAULTS}
    return dataclasses.replace(cfg, **unset) if unset else cfg


def _check_resumable(path: Path, cfg: TrainConfig) -> str | None:
    """A checkpoint to resume must come from the same run: same model, data, seed, length.
    Returns the data's old path when only its path changed (the run moved to another
    machine); :func:`_check_same_data` then checks that the data is the same."""
    if not path.is_file():
        return None
    old = read_meta(path).get("config") or {}
    new = dataclasses.asdict(cfg)
    changed = [k for k in RESUME_KEYS if k in old and old[k] != new[k] and k != "data"]
    if changed:
        k = changed[0]
        raise ConfigError(f"cannot resume {path}: {k} was {old[k]!r}, now {new[k]!r} "
                          "(use another --out for a new run)")
    return old["data"] if old.get("data") not in (None, new["data"]) else None


def _check_same_data(path: Path, old: str, new: str, spec, steps_per_epoch: int) -> str:
    """The note for a run resumed with its data at another path, if the data is the same
    (classes, image size, normalisation statistics, batches per epoch); else an error."""
    meta = read_meta(path)
    rec, now = meta.get("data") or {}, spec_summary(spec)
    if meta.get("epoch"):
        rec = {**rec, "batches per epoch": round(meta["step"] / meta["epoch"])}
        now["batches per epoch"] = steps_per_epoch
    diff = data_difference(rec, now)
    if diff:
        raise ConfigError(f"cannot resume {path}: data was {old!r}, now {new!r}, and its "
                          f"{diff} (use another --out for a new run)")
    return f"pof: the data moved from {old} to {new} (same classes, statistics and size)"


def _zero_sums() -> dict[str, float]:
    return {"loss": 0.0, "penalty": 0.0, "correct": 0, "n": 0}


def _check_classes(data: str, train_classes: int, test_classes: int) -> None:
    if train_classes < 2:
        raise DataError(f"{data}: the training split has {train_classes} class; a classifier "
                        "needs at least 2")
    if test_classes != train_classes:
        raise DataError(f"{data}: the training split has {train_classes} classes but the "
                        f"held-out split has {test_classes}")


def train(cfg: TrainConfig, resume: bool = False,
          on_epoch: Callable[[dict], None] | None = None) -> Path:
    """Train as ``cfg`` says (resuming from ``cfg.out`` if asked); return the run folder.

    ``on_epoch`` is called on the main process with each epoch's metrics record.
    """
    return Trainer(cfg, resume, on_epoch).run()
