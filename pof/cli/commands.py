"""What each ``pof`` command does: its flags handed to one library call
(:mod:`pof.workflows`), which checks inputs and outputs first, then works, then writes."""

from __future__ import annotations

import argparse


def cmd_train(args: argparse.Namespace) -> None:
    from ..workflows.training import init_data, run_training, train_config

    cfg = train_config(args)
    if cfg.init and not args.resume:
        cfg = init_data(args, cfg)
    print(f"run folder: {run_training(cfg, args.resume)}")


def cmd_eval(args: argparse.Namespace) -> None:
    from ..workflows import evaluate_checkpoint

    m = evaluate_checkpoint(args.checkpoint, args.data, args.batch_size, args.device)
    print(f"top1 {100 * m['top1']:.2f}%  top5 {100 * m['top5']:.2f}%  loss {m['loss']:.4f}")


def cmd_prune(args: argparse.Namespace) -> None:
    from ..workflows.prune import run_prune

    run_prune(args)


def cmd_export(args: argparse.Namespace) -> None:
    from ..workflows import export_checkpoint

    export_checkpoint(args.checkpoint, args.out, args.format)


def cmd_sweep(args: argparse.Namespace) -> None:
    from ..workflows.sweeps import run_sweep

    run_sweep(args)


def cmd_finetune(args: argparse.Namespace) -> None:
    from ..workflows.training import run_finetune

    print(f"run folder: {run_finetune(args)}")


def cmd_demo(args: argparse.Namespace) -> None:
    from ..demo import run_demo
    from ..training.run_dir import check_out_dir, outputs

    with outputs(check_out_dir(args.out)) as out:
        run_demo(out=out, quick=args.quick, seed=args.seed, device=args.device)
