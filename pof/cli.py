"""The ``pof`` command: train, prune, export, eval, sweep, finetune, demo.

User mistakes (unknown model, missing path, bad sparsity, bad config key, corrupt file) end
with one line on stderr and exit code 2, never a traceback (set POF_DEBUG=1 to see one).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, ImportError)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _csv(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def _nonneg_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return n


def _sparsity_arg(text: str) -> float | str:
    """``0.7`` or a range ``0.3:0.9`` (checked with the rest of the config)."""
    try:
        return float(text)
    except ValueError:
        return text


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    """One ``--flag`` per TrainConfig field; unset flags keep the config/recipe value."""
    from .train import FIELD_HELP, TrainConfig

    skip = {"model_kwargs"}
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        kinds = {"bool": _bool, "list": _csv, "int": int, "float": float}
        kind = next((k for name, k in kinds.items() if name in str(f.type)), str)
        if f.name == "sparsity":
            kind = _sparsity_arg
        p.add_argument(flag, dest=f.name, type=kind, default=argparse.SUPPRESS,
                       help=f"{FIELD_HELP.get(f.name, '')} (default: {default})".lstrip())


def _train_config(args: argparse.Namespace, overrides: dict[str, Any] | None = None):
    from .train import TrainConfig

    base = TrainConfig.from_yaml(args.config) if getattr(args, "config", None) else TrainConfig()
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values.update(overrides or {})
    return dataclasses.replace(base, **values).check()


# ---------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> None:
    from .train import train

    out = train(_train_config(args), resume=args.resume)
    print(f"run folder: {out}")


def _data_source(args: argparse.Namespace, meta: dict) -> str:
    src = args.data or meta.get("data", {}).get("source")
    if not src:
        raise ValueError("no --data given and the checkpoint does not name its data")
    return src


def _eval_fn(data: str, batch: int, progress: bool, device: str = "cpu"):
    from .data import make_loader
    from .train import _test_split, evaluate

    ds = _test_split(data, progress)
    loader = make_loader(ds, batch, train=False)
    return lambda model: evaluate(model, loader, device)


def _recal_fn(data: str, batches: int, batch_size: int):
    """``model -> None``: BatchNorm recalibration on ``batches`` unaugmented training batches
    (on the model's device)."""
    from .bn_recal import recalibrate_bn
    from .data import load_dataset, make_loader

    ds = load_dataset(data, "train", progress=True)
    return lambda model: recalibrate_bn(
        model, make_loader(ds, batch_size, train=True, augment=False, seed=0), batches)


def _check_bn_recal(model, args: argparse.Namespace, ckpt: str) -> None:
    """``--bn-recal`` needs BatchNorm layers: say so before any work."""
    from .bn_recal import batchnorms

    if args.bn_recal and not batchnorms(model):
        raise ValueError(f"--bn-recal: {ckpt} has no BatchNorm layers to re-estimate")


def _load(path: str, device: str):
    """``(model on device, metadata)`` from a checkpoint; checks the device first."""
    from .checkpoint import model_from_checkpoint
    from .device import resolve_device

    dev = resolve_device(device)
    model, meta = model_from_checkpoint(path)
    return model.to(dev), meta, dev


def cmd_eval(args: argparse.Namespace) -> None:
    model, meta, dev = _load(args.checkpoint, args.device)
    m = _eval_fn(_data_source(args, meta), args.batch_size, True, dev)(model)
    print(f"top1 {100 * m['top1']:.2f}%  top5 {100 * m['top5']:.2f}%  loss {m['loss']:.4f}")


def cmd_prune(args: argparse.Namespace) -> None:
    from . import prune, remove, sparsity_report
    from .checkpoint import save_checkpoint
    from .masks import check_sparsity

    if args.sparsity is not None:
        check_sparsity(args.sparsity)  # before the (slow) load
    model, meta, _ = _load(args.checkpoint, args.device)
    _check_bn_recal(model, args, args.checkpoint)
    lo_hi = (meta.get("config") or {}).get("sparsity")
    if isinstance(lo_hi, list) and args.sparsity is not None and not (
            lo_hi[0] - 1e-9 <= args.sparsity <= lo_hi[1] + 1e-9):
        print(f"pof prune: note: {args.checkpoint} was trained for sparsities "
              f"{lo_hi[0]:g}-{lo_hi[1]:g}; {args.sparsity:g} is outside that range")
    n0 = sum(p.numel() for p in model.parameters())
    if args.structure == "channel":
        _prune_channels(model, meta, args)
    else:
        prune(model, args.sparsity, scope=args.scope, pattern=args.pattern,
              recover=args.recover, exclude=args.exclude or None)
    if args.bn_recal:
        _recal_fn(_data_source(args, meta), args.bn_recal, args.batch_size)(model)
    if args.permanent or args.structure == "channel":
        remove(model)
    report = sparsity_report(model, exclude=args.exclude or None)
    print(report)
    if args.structure == "channel":
        n1 = sum(p.numel() for p in model.parameters())
        print(f"channels removed: {n0:,} -> {n1:,} parameters ({100 * n1 / n0:.1f}%)")
    meta = {k: v for k, v in meta.items() if k in ("arch", "data", "config")}
    meta["pruned"] = {"sparsity": args.sparsity, "scope": args.scope, "pattern": args.pattern,
                      "recover": args.recover, "source": str(args.checkpoint),
                      "structure": args.structure, "importance": args.importance,
                      "bn_recal_batches": args.bn_recal}
    path = save_checkpoint(Path(args.out) / "pruned.safetensors", model, meta)
    (Path(args.out) / "sparsity.txt").write_text(str(report) + "\n")
    print(f"wrote {path}")
    if args.onnx:
        from .onnx_export import export_onnx

        err = export_onnx(model, Path(args.out) / "model.onnx", _example_input(meta))
        print(f"wrote {Path(args.out) / 'model.onnx'} (onnxruntime matches PyTorch to "
              f"{err:.1e})")


def _prune_channels(model, meta: dict, args: argparse.Namespace) -> None:
    """``pof prune --structure channel``: mask channels (means from training batches)."""
    from . import prune
    from .data import load_dataset, make_loader

    if args.sparsity is None or args.pattern or args.scope != "layer":
        raise ValueError("--structure channel needs --sparsity (the fraction of channels) "
                         "and takes no --pattern or --scope global")
    batches = None
    if args.recover == "mean":
        ds = load_dataset(_data_source(args, meta), "train", progress=True)
        batches = make_loader(ds, args.batch_size, train=True, augment=False, seed=0)
    prune(model, args.sparsity, structure="channel", recover=args.recover,
          exclude=args.exclude or None, example_inputs=_example_input(meta),
          batches=batches, num_batches=args.mean_batches, importance=args.importance)


def _example_input(meta: dict):
    """A zero batch of one input of the checkpoint's image size."""
    import torch

    from .models import default_input_size

    size = (meta.get("data") or {}).get("image_size")
    return torch.zeros(1, *(size or default_input_size(meta["arch"]["name"])))


def cmd_export(args: argparse.Namespace) -> None:
    from . import remove
    from .checkpoint import model_from_checkpoint, save_checkpoint
    from .prune import pruned_layers

    src = Path(args.checkpoint)
    model, meta = model_from_checkpoint(src)
    if args.format == "onnx":
        from .onnx_export import export_onnx

        err = export_onnx(model, args.out, _example_input(meta))
        size = Path(args.out).stat().st_size
        print(f"wrote {args.out}: {size / 1e6:.2f} MB ONNX; onnxruntime matches PyTorch to "
              f"{err:.1e}")
        return
    if not pruned_layers(model):
        raise ValueError(f"{src} is not pruned; run `pof prune` first")
    remove(model)
    meta = {k: v for k, v in meta.items() if k in ("arch", "data", "config", "pruned")}
    out = save_checkpoint(args.out, model, meta, compact=True)
    size = out.stat().st_size
    dense_size = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    print(f"wrote {out}: {size / 1e6:.2f} MB ({100 * size / dense_size:.0f}% of the "
          f"{dense_size / 1e6:.2f} MB of dense tensors)")


def cmd_sweep(args: argparse.Namespace) -> None:
    from .report import markdown_table, plot_sweep, plot_weight_histograms, write_json
    from .sweep import bake_masks, parse_sparsities, sweep

    sparsities = parse_sparsities(args.sparsities)
    out = Path(args.out)
    rows, models = [], {}
    for ckpt in args.checkpoints:
        model, meta, dev = _load(ckpt, args.device)
        bake_masks(model)  # a GMP run: its zeros stay, the sweep prunes further from there
        _check_bn_recal(model, args, ckpt)
        label = Path(ckpt).parent.name if len(args.checkpoints) > 1 else Path(ckpt).stem
        data = _data_source(args, meta)
        evaluate = _eval_fn(data, args.batch_size, True, dev)
        recal = _recal_fn(data, args.bn_recal, 128) if args.bn_recal else None
        rows += sweep(model, evaluate, sparsities, recovers=args.recover.split(","),
                      scope=args.scope, exclude=args.exclude or None, label=label,
                      recalibrate=recal)
        models[label] = model
    table = markdown_table(rows)
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.md").write_text(table + "\n")
    write_json(rows, out / "sweep.json")
    plot_sweep(rows, out / "sweep.png")
    plot_weight_histograms(models, out / "weights.png")
    print(f"wrote {out / 'sweep.md'}, sweep.json, sweep.png, weights.png")


def cmd_finetune(args: argparse.Namespace) -> None:
    from .checkpoint import load_checkpoint
    from .train import TrainConfig, train

    _, meta = load_checkpoint(args.checkpoint)
    arch = meta.get("arch") or {}
    src = dict(meta.get("config") or {})
    cfg = TrainConfig.from_dict({k: v for k, v in src.items() if k in
                                 {f.name for f in dataclasses.fields(TrainConfig)}})
    over = {"init": str(args.checkpoint), "penalty": "none", "sphere": False,
            "max_steps": args.max_steps,
            "structure": "weight", "pattern": None,
            "model": arch.get("name", cfg.model), "model_kwargs": arch.get("kwargs", {}),
            "out": args.out or str(Path(args.checkpoint).parent / "finetune")}
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    over.update({k: v for k, v in vars(args).items() if k in names and k not in over})
    cfg = dataclasses.replace(cfg, **over).check()
    print(f"run folder: {train(cfg, resume=args.resume)}")


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(out=args.out, quick=args.quick, seed=args.seed, device=args.device)


# ---------------------------------------------------------------- parser
def device_flag(q: argparse.ArgumentParser, default: str | None = "auto") -> None:
    q.add_argument("--device", default=argparse.SUPPRESS if default is None else default,
                   help="auto (CUDA when available), cpu, cuda or cuda:N (default: auto)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pof", description="Pruning On-the-Fly: train with a pruning-aware "
                "penalty, then prune at any sparsity without retraining.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train (or continue training) a model")
    t.add_argument("--config", help="recipe YAML; flags override its values")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors")
    _add_config_flags(t)
    t.set_defaults(func=cmd_train)

    def data_flags(q: argparse.ArgumentParser) -> None:
        q.add_argument("--data", help="data set (default: the one the checkpoint was trained on)")
        q.add_argument("--batch-size", type=int, default=256)
        device_flag(q)

    e = sub.add_parser("eval", help="top-1/top-5 accuracy and loss of a checkpoint")
    e.add_argument("checkpoint")
    data_flags(e)
    e.set_defaults(func=cmd_eval)

    def prune_flags(q: argparse.ArgumentParser) -> None:
        q.add_argument("--scope", choices=("layer", "global"), default="layer")
        q.add_argument("--exclude", type=_csv, default=[],
                       help="comma-separated layer-name patterns to keep dense")
        q.add_argument("--bn-recal", type=_nonneg_int, default=0, metavar="N",
                       help="after pruning, re-estimate BatchNorm statistics on N unaugmented "
                       "training batches (no weight updates; default 0 = off)")

    pr = sub.add_parser("prune", help="one-shot prune a checkpoint")
    pr.add_argument("checkpoint")
    pr.add_argument("--sparsity", type=float, help="fraction of weights to remove, in [0, 1)")
    pr.add_argument("--recover", choices=("zero", "mean"), default="mean")
    pr.add_argument("--pattern", help="N:M pattern instead of --sparsity, e.g. 2:4")
    pr.add_argument("--permanent", action="store_true",
                    help="bake the masks in (pof.remove); the result can no longer be fine-tuned"
                    " with fixed masks")
    pr.add_argument("--structure", choices=("weight", "channel"), default="weight",
                    help="prune single weights, or whole channels (removed physically: a "
                    "smaller dense model; --sparsity is then the fraction of channels)")
    pr.add_argument("--importance", choices=("pof", "magnitude"), default="pof",
                    help="channels: pof (consumer-column energy, what the channel penalty "
                    "shrinks) or magnitude (Torch-Pruning's group L2 magnitude)")
    pr.add_argument("--mean-batches", type=_nonneg_int, default=10, metavar="N",
                    help="channels with --recover mean: training batches (no labels used) "
                    "that estimate each removed channel's mean")
    pr.add_argument("--onnx", action="store_true",
                    help="also write OUT/model.onnx, checked against PyTorch with onnxruntime")
    pr.add_argument("--out", required=True, help="output folder")
    prune_flags(pr)
    data_flags(pr)
    pr.set_defaults(func=cmd_prune)

    x = sub.add_parser("export", help="save a pruned checkpoint compactly (sparse on disk), "
                       "or any checkpoint as ONNX")
    x.add_argument("checkpoint", help="a checkpoint from `pof prune` (any, for --format onnx)")
    x.add_argument("--out", required=True, help="output .safetensors (or .onnx) file")
    x.add_argument("--format", choices=("safetensors", "onnx"), default="safetensors",
                   help="onnx: a plain graph checked against PyTorch with onnxruntime (1e-4)")
    x.set_defaults(func=cmd_export)

    s = sub.add_parser("sweep", help="accuracy vs sparsity table and plots for checkpoints")
    s.add_argument("checkpoints", nargs="+")
    s.add_argument("--sparsities", default="0.3,0.5,0.7,0.8,0.9")
    s.add_argument("--recover", default="zero,mean", help="comma-separated: zero,mean")
    s.add_argument("--out", default="sweep", help="output folder")
    data_flags(s)
    prune_flags(s)
    s.set_defaults(func=cmd_sweep)

    f = sub.add_parser("finetune", help="fine-tune a pruned checkpoint with its masks fixed")
    f.add_argument("checkpoint")
    f.add_argument("--epochs", type=float, default=2)
    f.add_argument("--lr", type=float, default=0.01)
    f.add_argument("--out", help="run folder (default: next to the checkpoint)")
    f.add_argument("--data", default=argparse.SUPPRESS)
    f.add_argument("--seed", type=int, default=argparse.SUPPRESS)
    f.add_argument("--workers", type=int, default=argparse.SUPPRESS)
    f.add_argument("--progress", type=_bool, default=argparse.SUPPRESS)
    f.add_argument("--resume", action="store_true")
    device_flag(f, default=None)
    f.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    f.set_defaults(func=cmd_finetune)

    d = sub.add_parser("demo", help="offline demo on scikit-learn digits: standard vs pof")
    d.add_argument("--quick", action="store_true", help="a few seconds instead of minutes")
    d.add_argument("--out", default="pof-demo", help="output folder")
    d.add_argument("--seed", type=int, default=0)
    device_flag(d)
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pof`` command; returns the exit code."""
    from .checkpoint import CheckpointError
    from .data import DataError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (*USER_ERRORS, CheckpointError, DataError) as e:
        if os.environ.get("POF_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"pof {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pof: interrupted (resume a training run with --resume)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
