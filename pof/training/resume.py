"""Which values a resumed run uses when its config changed since it started.

The rule: a resumed run continues the run it stopped. Values that decide the run's
identity (``RESUME_KEYS``: model, data, seed, length, penalty, sparsity, ...) must be as
recorded, else the resume is refused. Values that only say where and how to run
(:data:`RUN_KEYS`: output folder, data path, device, workers, progress, step limit,
logging) take today's. Every other training value (learning rate, momentum, weight
decay, penalty weight, ...) is the checkpoint's: the optimizer and the LR schedule resume
from their saved state anyway, so a changed value would be recorded in ``config.yaml``
but not used. Each value that differs is said in one line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from .config import TrainConfig

RUN_KEYS = ("out", "data", "device", "workers", "progress", "max_steps", "tensorboard",
            "channels_last", "ckpt_every")


def resume_config(cfg: TrainConfig, log: Callable[[str], object] = print) -> TrainConfig:
    """``cfg`` for ``--resume``: training values that differ from those recorded in the
    run's ``last.safetensors`` replaced by the recorded ones (said via ``log``)."""
    from .checkpoint import read_meta
    from .loop import RESUME_KEYS

    last = Path(cfg.out) / "last.safetensors"
    if not last.is_file():
        return cfg
    old = read_meta(last).get("config") or {}
    now = dataclasses.asdict(cfg)
    keep = {k: old[k] for k, v in now.items()
            if k in old and v is not None and v != old[k]
            and k not in RUN_KEYS and k not in RESUME_KEYS}
    for k, v in keep.items():
        log(f"pof: note: resuming {cfg.out} with its recorded {k} {v!r}, not {now[k]!r} (a "
            "resumed run continues as it started; another --out starts a run with the new "
            "value)")
    return dataclasses.replace(cfg, **keep) if keep else cfg
