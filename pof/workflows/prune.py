"""Prune a checkpoint, as ``pof prune`` does: one library call."""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PofError
from .data_rule import data_meta, data_source
from .steps import (
    check_bn_recal,
    evaluator,
    example_input,
    load_on,
    not_folded,
    recalibrator,
    write_onnx,
)


@dataclass
class PruneOptions:
    """Everything ``pof prune`` takes (the same names as its flags, ``no_eval`` for
    ``--no-eval``); exactly one of ``sparsity``, ``pattern``, ``speedup``, ``latency_ms``."""

    checkpoint: str
    out: str
    sparsity: float | None = None
    pattern: str | None = None
    speedup: float | None = None
    latency_ms: float | None = None
    recover: str = "mean"
    permanent: bool = False
    structure: str = "weight"
    importance: str = "pof"
    round_to: int | list[int] | None = None
    mean_batches: int = 10
    onnx: bool = False
    latency_batch: int = 1
    threads: int = 1
    repeats: int = 10
    candidates: list[float] | None = None
    no_eval: bool = False
    scope: str = "layer"
    exclude: list[str] | None = None
    bn_recal: int = 0
    data: str | None = None
    batch_size: int = 256
    device: str = "auto"

    def __post_init__(self) -> None:
        from ..core.channels import round_to_list
        from ..core.masks import check_choice, check_sparsity, check_whole

        how = [k for k in ("sparsity", "pattern", "speedup", "latency_ms")
               if getattr(self, k) is not None]
        if len(how) != 1:
            raise PofError("give exactly one of sparsity, pattern, speedup, latency_ms")
        if self.sparsity is not None:
            self.sparsity = check_sparsity(self.sparsity)
        check_choice("recover", self.recover, ("zero", "mean"))
        check_choice("structure", self.structure, ("weight", "channel"))
        check_choice("scope", self.scope, ("layer", "global"))
        check_choice("importance", self.importance, ("pof", "magnitude"))
        self.round_to = round_to_list(self.round_to)
        if self.sparsity is not None:
            one_round_to(self.round_to)
        check_whole("bn_recal", self.bn_recal, 0)


def prune_checkpoint(checkpoint: str | Path, out: str | Path, sparsity: float | None = None,
                     **options: Any) -> Path:
    """Prune ``checkpoint`` one-shot and write ``out/pruned.safetensors`` (+ sparsity.txt,
    model.onnx with ``onnx=True``); returns the checkpoint written.

    Weights or whole channels (``structure="channel"``; or the widest width that meets a
    measured ``speedup`` / ``latency_ms``), mean or zero fill, BatchNorm re-estimation on
    ``bn_recal`` batches, top-1 before and after when data is here (``no_eval=True``
    skips it), the data it used recorded. Other options: :class:`PruneOptions`.
    """
    return run_prune(PruneOptions(str(checkpoint), str(out), sparsity, **options))


def run_prune(opts: Any) -> Path:
    """:func:`prune_checkpoint` of a :class:`PruneOptions` (or the CLI's arguments); the
    caller's ``opts`` is left as given (the width a speed search picks goes on a copy)."""
    from ..core.sparsity import sparsity_report
    from ..training.run_dir import check_out_dir

    opts = copy.copy(opts)
    check_channel_flags(opts)
    out = check_out_dir(opts.out)
    model, meta = load_on(opts.checkpoint, opts.device)
    not_folded(opts.checkpoint, model)
    check_bn_recal(model, opts, opts.checkpoint)
    latency = width_by_speed(model, meta, opts)  # sets opts.sparsity
    lo_hi = (meta.get("config") or {}).get("sparsity")
    if isinstance(lo_hi, list) and opts.sparsity is not None and not (
            lo_hi[0] - 1e-9 <= opts.sparsity <= lo_hi[1] + 1e-9):
        print(f"pof prune: note: {opts.checkpoint} was trained for sparsities "
              f"{lo_hi[0]:g}-{lo_hi[1]:g}; {opts.sparsity:g} is outside that range")
    needs_data = bool(opts.bn_recal) or (opts.structure == "channel" and opts.recover == "mean")
    data = opts.data
    if not opts.no_eval or needs_data:
        data = data_source(opts, meta, opts.checkpoint, "prune", required=needs_data)
    evaluate = None
    if data is not None and not opts.no_eval:
        evaluate = evaluator(model, data, opts.batch_size, meta, opts.checkpoint)
        before = evaluate(model)["top1"]
    prune_model(model, meta, opts, data)
    report = sparsity_report(model, exclude=opts.exclude)
    print(report)
    if evaluate is not None:
        print(f"top1 before {100 * before:.2f}%  after {100 * evaluate(model)['top1']:.2f}%"
              f"  (held-out split of {data})")
    elif not opts.no_eval:
        print("pof prune: top-1 not measured: no data (pass --data PATH)")
    return write_pruned(model, meta, opts, data, latency, out, str(report))


def prune_model(model: Any, meta: dict, opts: Any, data: str | None) -> None:
    """The prune itself: bake an already-pruned model's masks, prune weights or channels
    (channels removed physically), re-estimate BatchNorm, make it permanent if asked."""
    from ..core.fold import remove
    from ..core.prune import prune

    bake_pruned(model, opts)
    recal = None
    if opts.bn_recal:
        recal = recalibrator(model, data, opts.bn_recal, meta, opts.checkpoint)
    channels = opts.structure == "channel"
    if channels:
        n0 = sum(p.numel() for p in model.parameters())
        meta["channels_removed"] = prune_channels_of(model, meta, opts, data)
        if opts.round_to > 1:
            print(f"pof prune: kept channels rounded to a multiple of {opts.round_to}: "
                  f"{100 * meta['channels_removed']:.1f}% of the channels removed "
                  f"({100 * opts.sparsity:g}% asked)")
        say_channel_recovery(model, meta, opts, n0)
    else:
        prune(model, opts.sparsity, scope=opts.scope, pattern=opts.pattern,
              recover=opts.recover, exclude=opts.exclude)
    if recal is not None:
        recal(model)
    if channels:
        from ..structured import remove_channels

        remove_channels(model)
        n1 = sum(p.numel() for p in model.parameters())
        print(f"channels removed: {n0:,} -> {n1:,} parameters ({100 * n1 / n0:.1f}%)")
    elif opts.permanent:
        remove(model)


def write_pruned(model: Any, meta: dict, opts: Any, data: str | None, latency: dict | None,
                 out: Path, report: str) -> Path:
    """``out/pruned.safetensors`` with what was done recorded (and the data used, the
    measured latency), ``sparsity.txt``, ``model.onnx`` if asked; all or nothing."""
    from ..fileio import write_text
    from ..training.checkpoint import save_checkpoint
    from ..training.run_dir import outputs

    removed = meta.get("channels_removed")
    meta = {k: v for k, v in meta.items() if k in ("arch", "data", "config")}
    meta["data"] = data_meta(meta, data)
    meta["pruned"] = {"sparsity": opts.sparsity, "scope": opts.scope, "pattern": opts.pattern,
                      "recover": opts.recover, "source": str(opts.checkpoint),
                      "structure": opts.structure, "importance": opts.importance,
                      "bn_recal_batches": opts.bn_recal}
    if opts.structure == "channel":  # what was removed (round_to moves it off the ratio)
        meta["pruned"].update(round_to=opts.round_to, channels_removed=removed)
    if latency is not None:
        meta["latency"] = latency
    names = ("pruned.safetensors", "sparsity.txt") + (("model.onnx",) if opts.onnx else ())
    with outputs(out, *names):
        path = save_checkpoint(out / "pruned.safetensors", model, meta)
        write_text(out / "sparsity.txt", report + "\n")
        if opts.onnx:
            write_onnx(model, meta, out / "model.onnx")
    print(f"wrote {path}")
    return path


def bake_pruned(model, args: argparse.Namespace) -> None:
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


def prune_channels_of(model, meta: dict, args: argparse.Namespace, data: str | None
                      ) -> float:
    """``pof prune --structure channel``: mask channels (means from training batches);
    returns the fraction of the groups' channels removed."""
    from ..core.channel_masks import PLAN_ATTR
    from ..data import load_dataset, make_loader
    from ..structured import prune_channels

    batches = None
    if args.recover == "mean":
        ds = load_dataset(data, "train", progress=True)
        batches = make_loader(ds, args.batch_size, train=True, augment=False, seed=0)
    prune_channels(model, args.sparsity, example_input(meta), args.recover, batches,
                   args.mean_batches, args.importance, args.exclude, args.round_to)
    groups = getattr(model, PLAN_ATTR).groups
    return round(sum(len(g.pruned) for g in groups) / sum(g.channels for g in groups), 6)


def say_channel_recovery(model, meta: dict, args: argparse.Namespace, n0: int) -> None:
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


def check_channel_flags(args: argparse.Namespace) -> None:
    """``--structure channel`` takes a fraction of channels (or ``--speedup`` /
    ``--latency-ms``, which pick it); ``--importance`` and ``--round-to`` need it. Sets
    ``args.round_to``: one multiple with ``--sparsity`` (default 1: exactly the ratio), the
    multiples to measure with ``--speedup`` / ``--latency-ms`` (default 1, 8, 16)."""
    from ..core.channels import SPEED_ROUND_TO, round_to_list

    by_speed = args.speedup is not None or args.latency_ms is not None
    rs = round_to_list(args.round_to)
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
    elif rs not in (None, [1]):
        raise PofError("--round-to applies to --structure channel only")
    if by_speed:
        args.round_to = rs or list(SPEED_ROUND_TO)
    else:
        args.round_to = one_round_to(rs)


def one_round_to(rs: list[int] | None) -> int:
    """The one multiple a prune at a given fraction takes (default 1); a list is refused."""
    if rs is not None and len(rs) > 1:
        raise PofError(f"--round-to takes one N with --sparsity, got {','.join(map(str, rs))}; "
                       "a list is for --speedup / --latency-ms, which measure each")
    return rs[0] if rs else 1


def width_by_speed(model, meta: dict, args: argparse.Namespace) -> dict | None:
    """``--speedup`` / ``--latency-ms``: measure candidate widths in onnxruntime, print the
    table, set ``args.sparsity`` and ``args.round_to`` to the widest that meets the request;
    the record."""
    from ..export.latency import candidate_widths, choose_width

    if args.speedup is None and args.latency_ms is None:
        return None
    lo_hi = (meta.get("config") or {}).get("sparsity")
    trained = isinstance(lo_hi, list) and (meta.get("config") or {}).get(
        "structure") == "channel"
    widths = args.candidates or (candidate_widths(*lo_hi) if trained else candidate_widths())
    args.sparsity, record = choose_width(
        model, example_input(meta), widths, args.speedup, args.latency_ms,
        args.latency_batch, args.threads, args.repeats, args.importance, args.exclude,
        round_to=args.round_to)
    args.round_to = record["round_to"]
    return record
