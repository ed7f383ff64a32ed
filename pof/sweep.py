"""Sparsity sweeps: prune a model at several sparsities and recovery modes, evaluate each.

``sweep`` prunes in place, evaluates, and unprunes again for every run, so the model
comes back exactly as it went in. Rows are plain dicts, ready for :mod:`pof.report`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext

from torch import nn

from .core.bn_recal import preserved_bn_stats
from .core.fold import remove
from .core.masks import check_choice, check_sparsity
from .core.parametrizations import RECOVER, pruned_layers, refuse_pruned
from .core.prune import prune, unprune
from .core.selection import Patterns, resolve_selection, select_weights
from .core.sparsity import SparsityReport, sparsity_report
from .progress import progress_bar


def bake_masks(model: nn.Module) -> nn.Module:
    """Make a pruned model's masks permanent (e.g. a GMP run's) so a sweep can prune it
    further; an unpruned model is returned as it is."""
    if pruned_layers(model):
        remove(model)
    return model


def _measured_sparsity(model: nn.Module, keys: set[str]) -> float:
    """Global sparsity over the weights called ``keys`` (the ones pruned)."""
    rows = [r for r in sparsity_report(model).layers if r.key in keys]
    return SparsityReport(rows).sparsity


def sweep(
    model: nn.Module,
    evaluate: Callable[[nn.Module], dict[str, float]],
    sparsities: Sequence[float],
    recovers: Sequence[str] = ("zero", "mean"),
    scope: str = "layer",
    exclude: Patterns = None,
    include: Patterns = None,
    keep_first_conv: bool | None = None,
    progress: bool = True,
    label: str = "",
    recalibrate: Callable[[nn.Module], object] | None = None,
) -> list[dict]:
    """Evaluate ``model`` dense and pruned at each sparsity and recovery mode.

    Returns one row per run: first the dense model (``sparsity=0.0, recover="dense"``),
    then every ``(recover, sparsity)`` pair. Each row is ``{"label", "sparsity",
    "recover", "measured_sparsity", **evaluate(model)}``; ``measured_sparsity`` is the
    global sparsity over the weights pof prunes, not over weights left dense. The layers are
    the selection recorded on the model unless ``include``/``exclude``/``keep_first_conv``
    are given. The model is pruned in place and unpruned after each run,
    also when ``evaluate`` raises; train/eval modes are restored at the end.
    ``recalibrate(model)`` (e.g. :func:`pof.recalibrate_bn` on a few training batches) runs
    after each prune, before ``evaluate``; BatchNorm statistics are restored after each run
    and rows get ``bn_recal=True``.
    """
    ss = [check_sparsity(s) for s in sparsities]
    for r in recovers:
        check_choice("recover", r, RECOVER)
    refuse_pruned(model, "call pof.unprune(model) or pof.remove(model) before a sweep")
    sel = resolve_selection(model, include, exclude, keep_first_conv)
    keys = {t.key for t in select_weights(model, sel.include, sel.exclude, sel.keep_first_conv)}
    runs = [(0.0, "dense")] + [(s, r) for r in recovers for s in ss]
    modes = {m: m.training for m in model.modules()}
    rows: list[dict] = []
    with progress_bar(runs, desc=f"sweep {label}".strip(), show=progress,
              leave=False) as bar:
        for s, r in bar:
            bar.set_postfix_str(f"{r} {100 * s:g}%")
            keep_bn = preserved_bn_stats(model) if recalibrate else nullcontext()
            with keep_bn:
                try:
                    if r != "dense":
                        prune(model, s, scope=scope, recover=r, include=sel.include,
                              exclude=sel.exclude, keep_first_conv=sel.keep_first_conv)
                        if recalibrate is not None:
                            recalibrate(model)
                    measured = _measured_sparsity(model, keys)
                    metrics = evaluate(model)
                finally:
                    if r != "dense":
                        unprune(model)
                    for m, training in modes.items():
                        m.training = training
            rows.append({"label": label, "sparsity": s, "recover": r,
                         "measured_sparsity": measured,
                         "bn_recal": recalibrate is not None and r != "dense", **metrics})
    return rows
