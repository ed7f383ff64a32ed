"""Measured latency: exported models timed in onnxruntime (CPU) on this machine.

:func:`interleaved_medians` times several callables round by round (machine noise hits them
alike; the median of each); :func:`width_latencies` exports a model at candidate channel
widths and times each in onnxruntime; :func:`pick_width` picks the widest one that meets a
speed-up or a latency. ``pof prune --speedup`` / ``--latency-ms`` and ``bench/latency.py``
use them.
"""

from __future__ import annotations

import copy
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..core.masks import check_whole
from ..core.parametrizations import pruned_layers
from ..core.prune import unprune
from ..errors import PofError
from ..machine import machine
from ..optional import require
from .onnx import export_onnx, session


def runtime(threads: int) -> str:
    """The runtime the measurements use, named with its version and threads."""
    ort = require("onnxruntime", "measuring latency")
    return f"onnxruntime {ort.__version__} CPUExecutionProvider, {threads} thread(s)"


def time_calls(fn: Callable[[], Any], inner: int) -> float:
    """Mean seconds of ``inner`` calls of ``fn``."""
    t = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t) / inner


def interleaved_medians(runners: dict[Hashable, Callable[[], Any]], repeats: int,
                        sample_s: float = 0.05) -> dict[Hashable, float]:
    """Median seconds per call of each runner over ``repeats`` rounds; each round calls
    every runner in turn, a fast one repeated to about ``sample_s`` per sample (after one
    warm-up call)."""
    if repeats < 1:
        raise PofError(f"repeats must be >= 1, got {repeats}")
    inner = {}
    for k, fn in runners.items():
        fn()
        inner[k] = max(1, math.ceil(sample_s / max(time_calls(fn, 1), 1e-5)))
    times: dict[Hashable, list[float]] = {k: [] for k in runners}
    for _ in range(repeats):
        for k, fn in runners.items():
            times[k].append(time_calls(fn, inner[k]))
    return {k: statistics.median(v) for k, v in times.items()}


def _at_width(model: nn.Module, sparsity: float, example: Tensor, importance: str,
              exclude: Any, round_to: int = 1) -> nn.Module:
    """A CPU copy of ``model`` with ``sparsity`` of every channel group removed."""
    from ..structured import prune_channels, remove_channels

    m = copy.deepcopy(model).cpu().eval()
    if pruned_layers(m):  # a pruned checkpoint's masks: latency does not depend on values
        unprune(m)
    if sparsity > 0:
        prune_channels(m, sparsity, example, importance=importance, exclude=exclude,
                       round_to=round_to)
        remove_channels(m)
    return m


def width_latencies(model: nn.Module, example_inputs: Tensor, sparsities: Sequence[float],
                    batch: int | Sequence[int] = 1, threads: int = 1, repeats: int = 10,
                    importance: str = "pof", exclude: Any = None,
                    round_to: int | str | Sequence[int] = 1, dedupe: bool = True
                    ) -> list[dict[str, Any]]:
    """Export ``model`` with each fraction of ``sparsities`` of its channels removed, each
    group's kept channels rounded to each multiple of ``round_to`` (1: exactly the fraction;
    ``"8,16"`` or ``(1, 8, 16)``: several), and time every export in onnxruntime at each
    ``batch`` (one or several) on ``threads`` threads, interleaved per batch
    (:func:`interleaved_medians`). The dense model is measured first: the baseline.
    Returns one row per model and batch: ``sparsity``, ``round_to``, ``batch``, ``params``,
    ``channels`` (each conv's output channels), ``ms`` (median per forward) and ``speedup``
    (dense ms / ms at that batch). With ``dedupe``, a candidate with an earlier row's
    parameter shapes is that model and gets no row (a fraction can so appear under an
    earlier label); nor does one that would empty a channel group. ``model`` is unchanged."""
    from ..core.channels import round_to_list

    require("onnxruntime", "measuring latency")
    batches = [batch] if isinstance(batch, int) else list(batch)
    if not batches:
        raise PofError("batch: give at least one batch size")
    for b in batches:
        check_whole("batch", b, 1)
    rs = round_to_list(round_to)
    if rs is None:
        raise PofError("round_to: give at least one multiple")
    example = example_inputs.detach().cpu()
    todo = [(0.0, 1)] + [(s, r) for s in sorted({0.0, *map(float, sparsities)}) for r in rs]
    models: dict[tuple[float, int], dict[str, Any]] = {}
    sessions, seen = {}, set()
    with tempfile.TemporaryDirectory() as tmp:
        for s, r in todo:
            if (s, r) in models:  # the dense model, asked for again
                continue
            try:
                m = _at_width(model, s, example, importance, exclude, r)
            except PofError:  # a group would lose every channel: not a width of it
                if s == 0:
                    raise
                continue
            shape = tuple(tuple(p.shape) for p in m.parameters())
            if dedupe and shape in seen:  # the same model as an earlier row
                continue
            seen.add(shape)
            models[(s, r)] = {"sparsity": s, "round_to": r,
                              "params": sum(p.numel() for p in m.parameters()),
                              "channels": [c.out_channels for c in m.modules()
                                           if isinstance(c, nn.Conv2d)]}
            path = Path(tmp) / f"w{len(sessions)}.onnx"
            export_onnx(m, path, example, check=False)
            sessions[(s, r)] = session(path, threads)
        rows = []
        for b in batches:
            x = {"input": torch.randn(b, *example.shape[1:]).numpy()}
            med = interleaved_medians({k: (lambda sess=sess, x=x: sess.run(None, x))
                                       for k, sess in sessions.items()}, repeats)
            dense = med[(0.0, 1)]
            rows += [{**row, "batch": b, "ms": 1000 * med[key], "speedup": dense / med[key]}
                     for key, row in models.items()]
    return rows


def pick_width(rows: list[dict[str, Any]], speedup: float | None = None,
               latency_ms: float | None = None) -> dict[str, Any] | None:
    """The widest row (most ``params`` where rows have them; then the lowest ``sparsity``)
    at least ``speedup`` times faster than the dense one, or at most ``latency_ms``; None if
    no row is."""
    if (speedup is None) == (latency_ms is None):
        raise PofError("give one of speedup or latency_ms")
    ok = [r for r in rows if (r["speedup"] >= speedup if speedup is not None
                              else r["ms"] <= latency_ms)]
    return min(ok, key=lambda r: (-r.get("params", 0), r["sparsity"])) if ok else None


def latency_table(rows: list[dict[str, Any]], chosen: dict[str, Any] | None = None) -> str:
    """The measured rows as a markdown table (the chosen one marked)."""
    rounded = any(r.get("round_to", 1) > 1 for r in rows)
    lines = ["| channels removed | " + ("rounded to | " if rounded else "")
             + "parameters | ms per batch | speed-up |",
             "|---:|" + ("---:|" if rounded else "") + "---:|---:|---:|"]
    for r in rows:
        mark = " **<-**" if chosen is not None and r is chosen else ""
        n = f"{r.get('round_to', 1)} | " if rounded else ""
        lines.append(f"| {100 * r['sparsity']:.1f}% | {n}{r['params']:,} | {r['ms']:.3f} | "
                     f"{r['speedup']:.2f}x{mark} |")
    return "\n".join(lines)


def candidate_widths(lo: float = 0.0, hi: float = 0.875, step: float = 0.0625
                     ) -> list[float]:
    """Channel fractions from ``lo`` to ``hi`` (both included) every ``step``."""
    n = max(0, math.floor((hi - lo) / step + 1e-9))
    return sorted({round(lo + k * step, 6) for k in range(n + 1)} | {round(hi, 6)})


def choose_width(model: nn.Module, example_inputs: Tensor, sparsities: Sequence[float],
                 speedup: float | None = None, latency_ms: float | None = None,
                 batch: int = 1, threads: int = 1, repeats: int = 10,
                 importance: str = "pof", exclude: Any = None,
                 say: Callable[[str], None] = print, round_to: int | Sequence[int] = 1
                 ) -> tuple[float, dict[str, Any]]:
    """Measure ``model`` at each width of ``sparsities`` and multiple of ``round_to``
    (:func:`width_latencies`), print the table with ``say`` and return the sparsity of the
    widest meeting the request (:func:`pick_width`) with a record of the measurement
    (request, chosen row with its ``round_to``, runtime, batch, machine, table).
    Raises :class:`PofError` when no width meets it."""
    rows = width_latencies(model, example_inputs, sparsities, batch, threads, repeats,
                           importance, exclude, round_to)
    chosen = pick_width(rows, speedup, latency_ms)
    where = f"{runtime(threads)}, batch {batch}, {machine()}"
    say(f"measured latency ({where}; median of {repeats} interleaved rounds):")
    say(latency_table(rows, chosen))
    gone = sorted(set(map(float, sparsities)) - {r["sparsity"] for r in rows} - {0.0})
    if gone:
        say(f"not measured (a channel group would lose every channel): "
            f"{', '.join(f'{100 * s:g}%' for s in gone)}")
    want = f"--speedup {speedup:g}" if speedup is not None else f"--latency-ms {latency_ms:g}"
    if chosen is None:
        best = min(rows, key=lambda r: r["ms"])
        how = f" rounded to {best['round_to']}" if best["round_to"] > 1 else ""
        raise PofError(f"no measured width meets {want}: the fastest, "
                       f"{100 * best['sparsity']:g}% of channels removed{how}, runs "
                       f"{best['ms']:.3g} "
                       f"ms ({best['speedup']:.2f}x the dense model); allow more sparsity "
                       "(--candidates) or ask for less")
    record = {"request": {"speedup": speedup} if speedup is not None
              else {"latency_ms": latency_ms},
              "sparsity": chosen["sparsity"], "round_to": chosen["round_to"],
              "ms": chosen["ms"], "speedup": chosen["speedup"],
              "dense_ms": rows[0]["ms"], "batch": batch, "threads": threads,
              "runtime": runtime(threads), "machine": machine(), "repeats": repeats,
              "table": rows}
    kept = (f" (kept channels rounded to a multiple of {chosen['round_to']})"
            if chosen["round_to"] > 1 else "")
    say(f"pof prune: {want}: {100 * chosen['sparsity']:g}% of channels removed{kept}, "
        f"{chosen['ms']:.3g} ms ({chosen['speedup']:.2f}x the dense {rows[0]['ms']:.3g} ms)")
    return chosen["sparsity"], record
