"""What each ``pof`` command does. Each checks its inputs and output first (files exist,
``--out`` is writable, metadata is sane, classes match), then works, then writes."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError, DataError, PofError


# ---------------------------------------------------------------- shared steps
def _train_config(args: argparse.Namespace, base: Any = None, overrides: dict | None = None):
    from ..training.config import TrainConfig

    if base is None:
        base = TrainConfig.from_yaml(args.config) if getattr(args, "config", None) else (
            TrainConfig())
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values.update(overrides or {})
    return dataclasses.replace(base, **values)


def _data_source(args: argparse.Namespace, meta: dict, ckpt: str, cmd: str,
                 required: bool = True) -> str | None:
    """The one data rule of every command: ``--data`` wins; else the data the checkpoint
    records, used only when it is here and is the same data (classes, image size,
    statistics: :func:`pof.data.provenance.data_difference`), said so in one line. Without
    either: a PofError, or None when not ``required``. Decided once per checkpoint."""
    memo = vars(args).setdefault("_data_memo", {})
    if str(ckpt) not in memo:
        memo[str(ckpt)] = _pick_data(args, meta, ckpt, cmd, required)
    return memo[str(ckpt)]


def _pick_data(args: argparse.Namespace, meta: dict, ckpt: str, cmd: str,
               required: bool) -> str | None:
    from ..data import load_dataset
    from ..data.load import is_builtin
    from ..data.provenance import data_difference, resolved, spec_summary

    if getattr(args, "data", None):
        return args.data
    rec = meta.get("data") or {}
    src = rec.get("source")
    if not isinstance(src, str) or not src:
        if not required:
            return None
        raise PofError(f"{ckpt}: no --data given and the checkpoint does not name its data; "
                       "pass --data PATH")
    if not is_builtin(src) and not Path(src).expanduser().exists():
        if not required:
            _note(f"pof {cmd}: {ckpt} was trained on {src}, which is not there from here "
                  "(--data PATH to use another copy)")
            return None
        raise PofError(f"{ckpt} was trained on {src}, which is not there from here; "
                       "pass --data PATH")
    diff = data_difference(rec, spec_summary(load_dataset(src, "train", progress=True).spec))
    if diff:
        raise PofError(f"{ckpt} was trained on {src}, but the data there now is not the same "
                       f"({diff}); pass --data PATH")
    where, was = resolved(src), rec.get("resolved")
    copy = f", another copy than the recorded {was}" if was and was != where else ""
    _note(f"pof {cmd}: data {where} (recorded in {ckpt}{copy}; same classes, image size "
          "and statistics)")
    return where


def _note(line: str) -> None:
    """One line about what a command chose (stdout: stderr holds only errors)."""
    print(line)


def _data_meta(meta: dict, data: str | None) -> dict:
    """``meta['data']`` with ``data`` (the data a command used) as its source: statistics
    stay the training data's (the model is normalised with them)."""
    from ..data.provenance import resolved

    rec = dict(meta.get("data") or {})
    if data is not None:
        rec["source"] = rec["resolved"] = resolved(data)
    return rec


def _num_classes(meta: dict) -> int:
    return int(meta["arch"]["num_classes"])


def _stats(meta: dict, ckpt: str):
    """The training data's per-channel (mean, std) a checkpoint records, or None."""
    data = meta.get("data") or {}
    if "mean" not in data and "std" not in data:
        return None
    mean, std = data.get("mean"), data.get("std")
    ok = all(isinstance(x, list) and x and len(x) == len(mean) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in x) for x in (mean, std))
    if not ok or min(std) <= 0:
        raise CheckpointError(f"{ckpt}: metadata 'data' mean/std are malformed")
    return tuple(mean), tuple(std)


def _load(ckpt: str, device: str):
    """``(model, metadata)`` of a checkpoint, the model on ``device`` (checked first)."""
    from ..training.checkpoint import model_from_checkpoint
    from ..training.distributed import pick_device

    dev = pick_device(device)
    model, meta = model_from_checkpoint(ckpt)
    return model.to(dev), meta


def _evaluator(model, data: str, batch: int, meta: dict, ckpt: str
               ) -> Callable[[Any], dict[str, float]]:
    """``model -> metrics`` on ``data``'s held-out split (on the model's device), normalised
    as the checkpoint's training data was, checked against the model first."""
    from ..core.model_info import model_device
    from ..data import make_loader
    from ..training.evaluate import check_model_takes, evaluate, held_out_split

    classes = _num_classes(meta)
    ds = held_out_split(data, True, _stats(meta, ckpt))
    if ds.spec.num_classes != classes:
        raise DataError(f"{data} has {ds.spec.num_classes} classes but {ckpt} was trained "
                        f"for {classes}")
    dev = model_device(model)
    check_model_takes(model, ds, f"the model of {ckpt}", dev)
    loader = make_loader(ds, batch, train=False)
    return lambda m: evaluate(m, loader, dev)


RECAL_BATCH = 128  # `--bn-recal N` means N batches of this many images, in prune and sweep


def _recalibrator(model, data: str, batches: int, meta: dict, ckpt: str
                  ) -> Callable[[Any], object]:
    """``model -> None``: BatchNorm recalibration on ``batches`` unaugmented training batches
    of RECAL_BATCH images (on the model's device), normalised as the checkpoint's training
    data was; ``model`` is checked to take the images first."""
    from ..core.bn_recal import recalibrate_bn
    from ..core.model_info import model_device
    from ..data import load_dataset, make_loader
    from ..training.evaluate import check_model_takes

    ds = load_dataset(data, "train", progress=True, stats=_stats(meta, ckpt))
    check_model_takes(model, ds, f"the model of {ckpt}", model_device(model))
    return lambda model: recalibrate_bn(
        model, make_loader(ds, RECAL_BATCH, train=True, augment=False, seed=0), batches)


def _check_bn_recal(model, args: argparse.Namespace, ckpt: str) -> None:
    """``--bn-recal`` needs BatchNorm layers: say so before any work."""
    from ..core.bn_recal import batchnorms

    if args.bn_recal and not batchnorms(model):
        raise PofError(f"--bn-recal: {ckpt} has no BatchNorm layers to re-estimate")


def _not_folded(ckpt: str, model) -> None:
    from ..core.folded import is_folded

    if any(is_folded(m) for m in model.modules()):
        raise PofError(f"{ckpt} is already pruned permanently (--permanent / export); prune "
                       "the checkpoint it came from instead")


# ---------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> None:
    cfg = _train_config(args)
    if cfg.init and not args.resume:
        cfg = _init_data(args, cfg)
    print(f"run folder: {_run(cfg, args.resume)}")


def _run(cfg, resume: bool) -> Path:
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


def _init_data(args: argparse.Namespace, cfg):
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
            _note(f"pof train: training on {cfg.data}, not on the data {cfg.init} was trained "
                  f"on ({rec['source']}: {diff})")
        return cfg
    data = _data_source(argparse.Namespace(data=None), meta, cfg.init, "train")
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


def cmd_eval(args: argparse.Namespace) -> None:
    model, meta = _load(args.checkpoint, args.device)
    data = _data_source(args, meta, args.checkpoint, "eval")
    m = _evaluator(model, data, args.batch_size, meta, args.checkpoint)(model)
    print(f"top1 {100 * m['top1']:.2f}%  top5 {100 * m['top5']:.2f}%  loss {m['loss']:.4f}")


def cmd_prune(args: argparse.Namespace) -> None:
    from ..core.fold import remove
    from ..core.prune import prune
    from ..core.sparsity import sparsity_report
    from ..fileio import write_text
    from ..training.checkpoint import save_checkpoint
    from ..training.run_dir import check_out_dir, outputs

    _check_channel_flags(args)
    out = check_out_dir(args.out)
    model, meta = _load(args.checkpoint, args.device)
    _not_folded(args.checkpoint, model)
    _check_bn_recal(model, args, args.checkpoint)
    latency = _width_by_speed(model, meta, args)  # sets args.sparsity
    lo_hi = (meta.get("config") or {}).get("sparsity")
    if isinstance(lo_hi, list) and args.sparsity is not None and not (
            lo_hi[0] - 1e-9 <= args.sparsity <= lo_hi[1] + 1e-9):
        print(f"pof prune: note: {args.checkpoint} was trained for sparsities "
              f"{lo_hi[0]:g}-{lo_hi[1]:g}; {args.sparsity:g} is outside that range")
    needs_data = bool(args.bn_recal) or (args.structure == "channel" and args.recover == "mean")
    data = args.data
    if not args.no_eval or needs_data:
        data = _data_source(args, meta, args.checkpoint, "prune", required=needs_data)
    evaluate = None
    if data is not None and not args.no_eval:
        evaluate = _evaluator(model, data, args.batch_size, meta, args.checkpoint)
        before = evaluate(model)["top1"]
    _bake_pruned(model, args)
    recal = None
    if args.bn_recal:
        recal = _recalibrator(model, data, args.bn_recal, meta, args.checkpoint)
    channels = args.structure == "channel"
    if channels:
        from ..structured import remove_channels

        n0 = sum(p.numel() for p in model.parameters())
        _prune_channels(model, meta, args, data)
        _say_channel_recovery(model, meta, args, n0)
    else:
        prune(model, args.sparsity, scope=args.scope, pattern=args.pattern,
              recover=args.recover, exclude=args.exclude)
    if recal is not None:
        recal(model)
    if channels:
        remove_channels(model)
        n1 = sum(p.numel() for p in model.parameters())
        print(f"channels removed: {n0:,} -> {n1:,} parameters ({100 * n1 / n0:.1f}%)")
    elif args.permanent:
        remove(model)
    report = sparsity_report(model, exclude=args.exclude)
    print(report)
    if evaluate is not None:
        print(f"top1 before {100 * before:.2f}%  after {100 * evaluate(model)['top1']:.2f}%"
              f"  (held-out split of {data})")
    elif not args.no_eval:
        print("pof prune: top-1 not measured: no data (pass --data PATH)")
    meta = {k: v for k, v in meta.items() if k in ("arch", "data", "config")}
    meta["data"] = _data_meta(meta, data)
    meta["pruned"] = {"sparsity": args.sparsity, "scope": args.scope, "pattern": args.pattern,
                      "recover": args.recover, "source": str(args.checkpoint),
                      "structure": args.structure, "importance": args.importance,
                      "bn_recal_batches": args.bn_recal}
    if latency is not None:
        meta["latency"] = latency
    names = ("pruned.safetensors", "sparsity.txt") + (("model.onnx",) if args.onnx else ())
    with outputs(out, *names):
        path = save_checkpoint(out / "pruned.safetensors", model, meta)
        write_text(out / "sparsity.txt", str(report) + "\n")
        if args.onnx:
            _write_onnx(model, meta, out / "model.onnx")
    print(f"wrote {path}")


def _bake_pruned(model, args: argparse.Namespace) -> None:
    """An already-pruned checkpoint (a GMP run's masks) is pruned further from its zeros,
    as ``pof sweep`` does; said so in one line."""
    from ..core.parametrizations import pruned_layers
    from ..core.sparsity import sparsity_report
    from ..sweep import bake_masks

    if not pruned_layers(model):
        return
    bake_masks(model)
    had = sparsity_report(model).sparsity
    more = (f"{100 * args.sparsity:g}% from there" if args.sparsity is not None
            else f"{args.pattern} from there")
    keep = (" (its zeros stay: more than asked)" if args.sparsity is not None
            and args.structure == "weight" and had > args.sparsity + 1e-3 else "")
    print(f"pof prune: {args.checkpoint} is already pruned ({100 * had:.1f}% of its weights "
          f"zero); its masks are made permanent and it is pruned to {more}{keep}")


def _prune_channels(model, meta: dict, args: argparse.Namespace, data: str | None) -> None:
    """``pof prune --structure channel``: mask channels (means from training batches)."""
    from ..data import load_dataset, make_loader
    from ..structured import prune_channels

    batches = None
    if args.recover == "mean":
        ds = load_dataset(data, "train", progress=True)
        batches = make_loader(ds, args.batch_size, train=True, augment=False, seed=0)
    prune_channels(model, args.sparsity, _example_input(meta), args.recover, batches,
                   args.mean_batches, args.importance, args.exclude)


def _say_channel_recovery(model, meta: dict, args: argparse.Namespace, n0: int) -> None:
    """Say where mean recovery put the removed channels' means (a model without BatchNorm:
    into biases, new ones where a layer had none) and, for a checkpoint whose channels were
    already removed, that the fraction is of the channels it has now."""
    import torch

    from ..core.channel_masks import recovery_summary
    from ..models import create_model

    if args.recover == "mean":
        n = recovery_summary(model)
        print(f"pof prune: mean recovery folds each removed channel's mean into the next "
              f"BatchNorm's running mean ({n['batchnorm']} layers) or, where there is none, "
              f"into the layer's bias ({n['bias']} layers, {n['new bias']} given a new bias)"
              + ("; no BatchNorm to re-estimate" if not n["batchnorm"] else ""))
    if "widths" in meta:
        arch = meta["arch"]
        with torch.device("meta"):
            own = sum(p.numel() for p in create_model(
                arch["name"], arch["num_classes"], **arch.get("kwargs", {})).parameters())
        print(f"pof prune: note: {args.checkpoint} already had channels removed ({n0:,} of "
              f"{arch['name']}'s {own:,} parameters); --sparsity {args.sparsity:g} removes "
              "that fraction of the channels it has now")


def _check_channel_flags(args: argparse.Namespace) -> None:
    """``--structure channel`` takes a fraction of channels (or ``--speedup`` /
    ``--latency-ms``, which pick it); ``--importance`` needs it."""
    by_speed = args.speedup is not None or args.latency_ms is not None
    if args.structure == "channel":
        if (args.sparsity is None and not by_speed) or args.scope != "layer":
            raise PofError("--structure channel needs --sparsity (the fraction of each channel "
                           "group), --speedup or --latency-ms and takes no --pattern or "
                           "--scope global")
    elif by_speed:
        raise PofError("--speedup and --latency-ms pick a channel width: add --structure "
                       "channel (removing single weights does not make a model faster)")
    elif args.importance != "pof":
        raise PofError("--importance applies to --structure channel only")


def _width_by_speed(model, meta: dict, args: argparse.Namespace) -> dict | None:
    """``--speedup`` / ``--latency-ms``: measure candidate widths in onnxruntime, print the
    table, set ``args.sparsity`` to the widest that meets the request; the record."""
    from ..export.latency import candidate_widths, choose_width

    if args.speedup is None and args.latency_ms is None:
        return None
    lo_hi = (meta.get("config") or {}).get("sparsity")
    trained = isinstance(lo_hi, list) and (meta.get("config") or {}).get(
        "structure") == "channel"
    widths = args.candidates or (candidate_widths(*lo_hi) if trained else candidate_widths())
    args.sparsity, record = choose_width(
        model, _example_input(meta), widths, args.speedup, args.latency_ms,
        args.latency_batch, args.threads, args.repeats, args.importance, args.exclude)
    return record


def _example_input(meta: dict):
    """A zero batch of one input of the checkpoint's image size."""
    import torch

    from ..models import default_input_size

    size = (meta.get("data") or {}).get("image_size")
    return torch.zeros(1, *(size or default_input_size(meta["arch"]["name"])))


def _write_onnx(model, meta: dict, path: Path) -> None:
    from ..export.onnx import deploy_metadata, export_onnx, plain_for_export

    plain_for_export(model)  # as exported: the parameter count the metadata gives
    err = export_onnx(model, path, _example_input(meta),
                      metadata=deploy_metadata(meta, model))
    print(f"wrote {path}: {path.stat().st_size / 1e6:.2f} MB ONNX; onnxruntime matches "
          f"PyTorch to {err:.1e}")


def cmd_export(args: argparse.Namespace) -> None:
    from ..core.fold import remove
    from ..core.parametrizations import pruned_layers
    from ..training.checkpoint import model_from_checkpoint, save_checkpoint
    from ..training.run_dir import check_out_file, outputs

    out = check_out_file(args.out)
    src = Path(args.checkpoint)
    model, meta = model_from_checkpoint(src)
    if args.format == "onnx":
        with outputs(out.parent, out.name):
            _write_onnx(model, meta, out)
        return
    if not pruned_layers(model):
        raise PofError(f"{src} is not pruned; run `pof prune` first")
    remove(model)
    meta = {k: v for k, v in meta.items() if k in ("arch", "data", "config", "pruned")}
    with outputs(out.parent, out.name):
        out = save_checkpoint(out, model, meta, compact=True)
    size = out.stat().st_size
    dense_size = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    print(f"wrote {out}: {size / 1e6:.2f} MB ({100 * size / dense_size:.0f}% of the "
          f"{dense_size / 1e6:.2f} MB of dense tensors)")


def cmd_sweep(args: argparse.Namespace) -> None:
    from ..fileio import write_text
    from ..report import markdown_table, plot_sweep, plot_weight_histograms, write_json
    from ..sweep import bake_masks, sweep
    from ..training.checkpoint import read_meta
    from ..training.run_dir import check_out_dir, outputs

    out = check_out_dir(args.out)
    for ckpt in args.checkpoints:  # every input checked before the first evaluation
        _data_source(args, read_meta(ckpt), ckpt, "sweep")
    rows, models = [], {}
    for ckpt, label in zip(args.checkpoints, sweep_labels(args.checkpoints), strict=True):
        model, meta = _load(ckpt, args.device)
        bake_masks(model)  # a GMP run: its zeros stay, the sweep prunes further from there
        _check_bn_recal(model, args, ckpt)
        data = _data_source(args, meta, ckpt, "sweep")
        evaluate = _evaluator(model, data, args.batch_size, meta, ckpt)
        recal = (_recalibrator(model, data, args.bn_recal, meta, ckpt) if args.bn_recal
                 else None)
        rows += sweep(model, evaluate, args.sparsities, recovers=args.recover,
                      scope=args.scope, exclude=args.exclude, label=label, recalibrate=recal)
        models[label] = model
    table = markdown_table(rows)
    print(table)
    with outputs(out, "sweep.md", "sweep.json", "sweep.png", "weights.png"):
        write_text(out / "sweep.md", table + "\n")
        write_json(rows, out / "sweep.json")
        plot_sweep(rows, out / "sweep.png")
        plot_weight_histograms(models, out / "weights.png")
    print(f"wrote {out / 'sweep.md'}, sweep.json, sweep.png, weights.png")


GENERIC_NAMES = {"final", "last", "pruned", "model", "best", "checkpoint"}


def sweep_labels(paths: list[str]) -> list[str]:
    """One distinct label per checkpoint: its file name, or its folder's where the file
    name says nothing (``runs/gmp70/final.safetensors`` -> ``gmp70``); more of the path
    where two would be equal."""
    parts = [Path(p).resolve().parts[1:] for p in paths]  # no root: never "/" as a label
    for keep_generic in (False, True):
        for depth in range(1, max(map(len, parts)) + 1):
            labels = []
            for pp in parts:
                stem = Path(pp[-1]).stem
                tail = [*pp[-depth - 1:-1], *([stem] if keep_generic or stem not in
                                               GENERIC_NAMES else [])]
                labels.append("/".join(tail[-depth:]) or stem)
            if len(set(labels)) == len(labels):
                return labels
    raise PofError("pof sweep: the same checkpoint is named twice")


def cmd_finetune(args: argparse.Namespace) -> None:
    from ..training.checkpoint import load_checkpoint
    from ..training.config import TrainConfig

    _, meta = load_checkpoint(args.checkpoint)
    arch = meta.get("arch") or {}
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    src = {k: v for k, v in (meta.get("config") or {}).items() if k in names}
    try:
        base = TrainConfig.from_dict(src, f"{args.checkpoint}: metadata 'config'")
    except ConfigError as e:
        raise PofError(str(e)) from None
    data = _data_source(args, meta, args.checkpoint, "finetune")
    at = (meta.get("pruned") or {}).get("sparsity")  # what it was pruned at, for the record
    over = {"init": str(args.checkpoint), "penalty": "none", "sphere": False, "penalty_ramp": 0.0,
            "max_steps": getattr(args, "max_steps", None), "structure": "weight",
            "pattern": None, "subnet": "none", "subnet_every": 1, "subnet_distill": 0.0,
            "subnet_sample": "sandwich", "subnet_count": 1, "subnet_teacher": "self",
            "sparsity": at if isinstance(at, float) else 0.0,  # not a training range
            "model": arch.get("name", base.model), "model_kwargs": arch.get("kwargs", {}),
            "data": data,
            "out": args.out or str(Path(args.checkpoint).parent / "finetune")}
    cfg = _train_config(args, base, over)
    print(f"run folder: {_run(cfg, args.resume)}")


def cmd_demo(args: argparse.Namespace) -> None:
    from ..demo import run_demo
    from ..training.run_dir import check_out_dir, outputs

    with outputs(check_out_dir(args.out)) as out:
        run_demo(out=out, quick=args.quick, seed=args.seed, device=args.device)
