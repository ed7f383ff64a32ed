"""Reports for sweeps (:func:`pof.sweep.sweep` rows): markdown tables, plots, JSON.

Plots use matplotlib's Agg backend, selected inside each function (importing pof never
touches matplotlib).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .core.selection import select_weights
from .errors import PofError
from .fileio import atomic_path, write_text

_STYLE = {"mean": "-", "zero": "--"}


def _pct(s: float) -> str:
    return f"{round(100 * s, 4):g}%"


def _dense(rows: list[dict], label: str) -> dict | None:
    return next((r for r in rows if r["label"] == label and r["recover"] == "dense"), None)


AS_SAVED_MIN = 0.005  # an unpruned run this sparse (measured) is a sparse model "as saved"


def _as_saved(row: dict | None) -> float | None:
    """The measured sparsity of a label's unpruned run when the model was saved sparse
    (e.g. a GMP checkpoint), else None (a dense model)."""
    s = float((row or {}).get("measured_sparsity", 0.0))
    return s if s >= AS_SAVED_MIN else None


def _groups(rows: list[dict]) -> list[tuple[str, str]]:
    """Sorted ``(label, recover)`` pairs of the pruned runs."""
    return sorted({(r["label"], r["recover"]) for r in rows if r["recover"] != "dense"})


def _labels(rows: list[dict]) -> list[str]:
    return sorted({r["label"] for r in rows})


def markdown_table(rows: list[dict], metric: str = "top1", percent: bool = True) -> str:
    """Markdown table of ``metric``: one row per (label, recover), one column per sparsity.

    The ``dense`` column comes from each label's unpruned run; where a model was saved
    sparse (a GMP checkpoint) the column is ``as saved`` and its cell names the measured
    sparsity (``86.49 @ 70.0%``). Values are percentages with
    two decimals (``percent=False``: the raw value, four decimals); missing runs are blank.
    """
    sparsities = sorted({r["sparsity"] for r in rows if r["recover"] != "dense"})

    def cell(row: dict | None) -> str:
        if row is None or metric not in row:
            return ""
        v = float(row[metric])
        return f"{100 * v:.2f}" if percent else f"{v:.4f}"

    saved = any(_as_saved(_dense(rows, lab)) is not None for lab in _labels(rows))
    header = ["model", "recovery", "as saved" if saved else "dense",
              *(_pct(s) for s in sparsities)]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", "---"] + ["---:"] * (len(header) - 2)) + "|",
    ]
    for label, recover in _groups(rows):
        by_s = {r["sparsity"]: r for r in rows if r["label"] == label and r["recover"] == recover}
        dense = cell(_dense(rows, label))
        if dense and (at := _as_saved(_dense(rows, label))) is not None:
            dense += f" @ {100 * at:.1f}%"  # a sparse model: its accuracy as saved, and where
        cells = [label, recover, dense, *(cell(by_s.get(s)) for s in sparsities)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def plot_sweep(
    rows: list[dict],
    path: str | os.PathLike,
    metric: str = "top1",
    title: str | None = None,
    percent: bool = True,
) -> None:
    """Plot ``metric`` (%) against sparsity (%) and save a PNG at ``path``.

    One line per (label, recover): solid for mean, dashed for zero recovery, one colour
    per label; each label's unpruned run is a point at its measured sparsity (0% dense,
    "as saved" for a model saved sparse) with a thin dotted line across.
    """
    plt = _pyplot()
    scale = 100.0 if percent else 1.0
    labels = _labels(rows)
    colors = {lab: plt.get_cmap("tab10")(i % 10) for i, lab in enumerate(labels)}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        for label in labels:
            dense = _dense(rows, label)
            if dense is not None and metric in dense:
                y = scale * float(dense[metric])
                at = _as_saved(dense)
                ax.axhline(y, color=colors[label], lw=0.8, ls=":", alpha=0.8)
                name = "dense" if at is None else f"as saved ({100 * at:.1f}%)"
                ax.plot([100 * (at or 0.0)], [y], "o", color=colors[label],
                        label=f"{label} {name}".strip())
        for label, recover in _groups(rows):
            pts = sorted((r["sparsity"], r[metric]) for r in rows
                         if r["label"] == label and r["recover"] == recover and metric in r)
            if not pts:
                continue
            ax.plot([100 * s for s, _ in pts], [scale * float(v) for _, v in pts],
                    ls=_STYLE.get(recover, "-."), marker=".", color=colors[label],
                    label=f"{label} {recover}".strip())
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel(f"{metric} (%)" if percent else metric)
        ax.set_title(title if title is not None else f"{metric} vs sparsity")
        ax.set_xlim(left=-2)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the plot
        _save(fig, path)
    finally:
        plt.close(fig)


def _normalised_magnitudes(model: nn.Module, exclude_first_conv: bool) -> torch.Tensor:
    """|w| / rms(w) for every prunable weight of ``model`` (each q/k/v block on its own),
    flattened together."""
    out = []
    with torch.no_grad():
        for t in select_weights(model, keep_first_conv=exclude_first_conv):
            for piece in t.pieces():
                w = piece.detach().double().abs().flatten()
                rms = w.pow(2).mean().sqrt().clamp_min(1e-12)
                out.append(w / rms)
    return torch.cat(out).cpu()


def plot_weight_histograms(
    models: dict[str, nn.Module],
    path: str | os.PathLike,
    bins: int = 200,
    exclude_first_conv: bool = True,
) -> None:
    """Histogram of |w|/rms (per layer) of each model's prunable weights; save a PNG.

    Uses the effective ``module.weight`` (sphere/pruned parametrizations applied). One
    subplot per model, side by side, on shared bins with a log-scale count axis.
    """
    if not models:
        raise PofError("plot_weight_histograms needs at least one model")
    data = {k: _normalised_magnitudes(m, exclude_first_conv) for k, m in models.items()}
    top = max(float(v.max()) for v in data.values()) or 1.0
    edges = torch.linspace(0.0, top, bins + 1).numpy()
    plt = _pyplot()
    n = len(data)
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.6), sharey=True, squeeze=False)
    try:
        for ax, (label, v) in zip(axes[0], data.items(), strict=True):
            zeros = float((v == 0).double().mean())
            ax.hist(v.numpy(), bins=edges, color="tab:blue", log=True)
            ax.set_title(f"{label}\n{v.numel():,} weights, {100 * zeros:.1f}% exactly 0",
                         fontsize="medium")
            ax.set_xlabel("|w| / rms(layer)")
            ax.grid(True, alpha=0.3)
        axes[0][0].set_ylabel("count")
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays/scalars, tensors
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON to ``path``, creating parent directories."""
    write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")
