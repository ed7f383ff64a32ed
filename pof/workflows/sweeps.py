"""Sweep checkpoints over sparsities, as ``pof sweep`` does (and ``pof demo`` writes its
sweep the same way): one library call."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import PofError
from .data_rule import data_source
from .steps import check_bn_recal, evaluator, load_on, recalibrator


def sweep_checkpoints(checkpoints: list[str | Path], out: str | Path = "sweep",
                      sparsities: tuple[float, ...] = (0.3, 0.5, 0.7, 0.8, 0.9),
                      recover: tuple[str, ...] = ("zero", "mean"), bn_recal: int = 0,
                      data: str | None = None, batch_size: int = 256, scope: str = "layer",
                      exclude: list[str] | None = None, device: str = "auto") -> list[dict]:
    """Prune each checkpoint one-shot at each sparsity (each fill; BatchNorm re-estimated
    on ``bn_recal`` batches), evaluate it, and write ``out/sweep.md``, ``sweep.json``,
    ``sweep.png`` and ``weights.png``; returns the rows. A model saved sparse (GMP) is
    pruned further from its zeros and shown at its measured sparsity, "as saved"."""
    from ..core.masks import check_choice, check_sparsity

    for r in recover:
        check_choice("recover", r, ("zero", "mean"))
    opts = argparse.Namespace(checkpoints=[str(c) for c in checkpoints], out=str(out),
                              sparsities=[check_sparsity(s) for s in sparsities],
                              recover=list(recover), bn_recal=bn_recal, data=data,
                              batch_size=batch_size, scope=scope, exclude=exclude,
                              device=device)
    return run_sweep(opts)


def run_sweep(opts: Any) -> list[dict]:
    """:func:`sweep_checkpoints` of the CLI's arguments."""
    from ..report import markdown_table
    from ..sweep import bake_masks, sweep
    from ..training.checkpoint import read_meta
    from ..training.run_dir import check_out_dir, outputs

    out = check_out_dir(opts.out)
    for ckpt in opts.checkpoints:  # every input checked before the first evaluation
        data_source(opts, read_meta(ckpt), ckpt, "sweep")
    rows, models = [], {}
    for ckpt, label in zip(opts.checkpoints, sweep_labels(opts.checkpoints), strict=True):
        model, meta = load_on(ckpt, opts.device)
        bake_masks(model)  # a GMP run: its zeros stay, the sweep prunes further from there
        check_bn_recal(model, opts, ckpt)
        data = data_source(opts, meta, ckpt, "sweep")
        evaluate = evaluator(model, data, opts.batch_size, meta, ckpt)
        recal = (recalibrator(model, data, opts.bn_recal, meta, ckpt) if opts.bn_recal
                 else None)
        rows += sweep(model, evaluate, opts.sparsities, recovers=opts.recover,
                      scope=opts.scope, exclude=opts.exclude, label=label, recalibrate=recal)
        models[label] = model
    print(markdown_table(rows))
    with outputs(out, "sweep.md", "sweep.json", "sweep.png", "weights.png"):
        write_sweep(rows, models, out)
    print(f"wrote {out / 'sweep.md'}, sweep.json, sweep.png, weights.png")
    return rows


def write_sweep(rows: list[dict], models: dict, out: Path, title: str | None = None) -> None:
    """A sweep's files: ``sweep.md`` (the table), ``sweep.json`` (the rows), ``sweep.png``
    (accuracy vs sparsity) and ``weights.png`` (weight-magnitude histograms)."""
    from ..fileio import write_text
    from ..report import markdown_table, plot_sweep, plot_weight_histograms, write_json

    write_text(out / "sweep.md", markdown_table(rows) + "\n")
    write_json(rows, out / "sweep.json")
    plot_sweep(rows, out / "sweep.png", **({"title": title} if title else {}))
    plot_weight_histograms(models, out / "weights.png")


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
