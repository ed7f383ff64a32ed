"""Training runs as the CLI starts them: the config from flags and a recipe, the data rule
for ``--init``, fine-tuning a pruned checkpoint with its masks fixed."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError, PofError
from .data_rule import data_source, note


def train_config(args: argparse.Namespace, base: Any = None, overrides: dict | None = None):
    from ..training.config import TrainConfig

    if base is None:
        base = TrainConfig.from_yaml(args.config) if getattr(args, "config", None) else (
            TrainConfig())
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values.update(overrides or {})
    return dataclasses.replace(base, **values)


def run_training(cfg, resume: bool) -> Path:
    """Train ``cfg``: on ``--resume`` with the recorded training values
    (:func:`~pof.training.resume.resume_config`); a run that fails before its first
    checkpoint leaves nothing (:func:`~pof.training.run_dir.run_outputs`)."""
    from ..training.loop import train
    from ..training.resume import resume_config
    from ..training.run_dir import check_out_dir, run_outputs

    if resume:
        cfg = resume_config(cfg)
    with run_outputs(check_out_dir(cfg.out)):
        return train(cfg, resume=resume)


def init_data(args: argparse.Namespace, cfg):
    """``train --init CKPT``: the data rule. Data the user gave (flag or recipe) wins, with
    a note where it is not the data CKPT was trained on; else CKPT's recorded data."""
    from ..data import load_dataset
    from ..data.provenance import data_difference, spec_summary
    from ..training.checkpoint import read_meta

    try:
        meta = read_meta(cfg.init)
    except CheckpointError:
        return cfg  # plain weights (or a bad file, which loading the weights reports)
    rec = meta.get("data") or {}
    if not isinstance(rec.get("source"), str):
        return cfg
    if "data" in vars(args) or _recipe_sets(args, "data"):
        diff = data_difference(rec, spec_summary(load_dataset(cfg.data, "train").spec))
        if diff:
            note(f"pof train: training on {cfg.data}, not on the data {cfg.init} was trained "
                  f"on ({rec['source']}: {diff})")
        return cfg
    data = data_source(argparse.Namespace(data=None), meta, cfg.init, "train")
    return dataclasses.replace(cfg, data=data)


def _recipe_sets(args: argparse.Namespace, key: str) -> bool:
    """Whether ``--config``'s YAML file sets ``key``."""
    import yaml

    if not getattr(args, "config", None):
        return False
    try:
        raw = yaml.safe_load(Path(args.config).read_text())
    except (OSError, yaml.YAMLError):
        return False  # TrainConfig.from_yaml has already said what is wrong
    return isinstance(raw, dict) and key in raw



def finetune_checkpoint(checkpoint: str | Path, out: str | Path | None = None,
                        data: str | None = None, resume: bool = False,
                        **values: Any) -> Path:
    """Fine-tune a pruned checkpoint with its masks fixed (plain training: no penalty, no
    sphere) and return the run folder (default: next to the checkpoint). ``values`` are
    :class:`~pof.training.TrainConfig` fields (default 2 epochs at lr 0.01); the data
    follows the one data rule."""
    opts = argparse.Namespace(**{"epochs": 2.0, "lr": 0.01, **values},
                              checkpoint=str(checkpoint), out=out and str(out), data=data,
                              resume=resume)
    return run_finetune(opts)


def run_finetune(opts: Any) -> Path:
    """:func:`finetune_checkpoint` of the CLI's arguments."""
    from ..training.checkpoint import load_checkpoint
    from ..training.config import TrainConfig

    _, meta = load_checkpoint(opts.checkpoint)
    arch = meta.get("arch") or {}
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    src = {k: v for k, v in (meta.get("config") or {}).items() if k in names}
    try:
        base = TrainConfig.from_dict(src, f"{opts.checkpoint}: metadata 'config'")
    except ConfigError as e:
        raise PofError(str(e)) from None
    data = data_source(opts, meta, opts.checkpoint, "finetune")
    at = (meta.get("pruned") or {}).get("sparsity")  # what it was pruned at, for the record
    over = {"init": str(opts.checkpoint), "penalty": "none", "sphere": False, "penalty_ramp": 0.0,
            "max_steps": getattr(opts, "max_steps", None), "structure": "weight",
            "pattern": None, "subnet": "none", "subnet_every": 1, "subnet_distill": 0.0,
            "subnet_sample": "sandwich", "subnet_count": 1, "subnet_teacher": "self",
            "sparsity": at if isinstance(at, float) else 0.0,  # not a training range
            "model": arch.get("name", base.model), "model_kwargs": arch.get("kwargs", {}),
            "data": data,
            "out": opts.out or str(Path(opts.checkpoint).parent / "finetune")}
    cfg = train_config(opts, base, over)
    return run_training(cfg, opts.resume)
