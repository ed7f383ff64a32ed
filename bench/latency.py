"""Inference latency: dense vs unstructured vs mean-folded vs channel-pruned models.

For each model and batch size, the four variants run in PyTorch eager and in
onnxruntime (CPU), interleaved round by round so that machine noise hits them alike;
each number is the median over rounds, and ratios are taken against the dense model in
the same runtime. Weights are random (latency does not depend on their values).

    python bench/latency.py --threads 1 --out docs/results/latency.md
    python bench/latency.py --models resnet20 --batches 1,8 --repeats 5   # a quick look
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

import pof
from pof.export.latency import interleaved_medians
from pof.export.onnx import export_onnx, session
from pof.models import create_model, default_input_size

VARIANTS = ("dense", "unstructured", "mean-folded", "structured")


def build(name: str, variant: str, sparsity: float, channels: float,
          size: tuple) -> torch.nn.Module:
    """``name`` as ``variant``: plain dense, pruned (zero / mean, made permanent) or with
    ``channels`` of every channel group removed."""
    torch.manual_seed(0)
    m = create_model(name).eval()
    if variant in ("unstructured", "mean-folded"):
        pof.remove(pof.prune(m, sparsity, recover="zero" if variant == "unstructured" else "mean"))
    elif variant == "structured":
        pof.prune_channels(m, channels, example_inputs=torch.zeros(1, *size))
        pof.remove_channels(m)
    return m


def measure(name: str, batch: int, args, tmp: Path) -> list[dict]:
    size = default_input_size(name)
    if size[1] > 64:
        size = (size[0], args.imagenet_size, args.imagenet_size)
    x = torch.randn(batch, *size)
    runners, params = {}, {}
    for v in VARIANTS:
        m = build(name, v, args.sparsity, args.channels, size)
        params[v] = sum(p.numel() for p in m.parameters())
        runners[(v, "eager")] = (lambda m=m: m(x))
        path = tmp / f"{name}-{v}.onnx"
        if not path.exists():
            export_onnx(m, path, torch.zeros(1, *size))
        sess, feed = session(path, args.threads), {"input": x.numpy()}
        runners[(v, "onnxruntime")] = (lambda s=sess, f=feed: s.run(None, f))
    with torch.no_grad():  # warm-up, fast calls repeated to ~50 ms per sample, median
        times = interleaved_medians(runners, args.repeats)
    rows = []
    for rt in ("eager", "onnxruntime"):
        dense = times[("dense", rt)]
        for v in VARIANTS:
            med = times[(v, rt)]
            rows.append({"model": name, "input": list(size), "batch": batch, "runtime": rt,
                         "variant": v, "ms": 1000 * med, "ratio": med / dense,
                         "params": params[v]})
    return rows


def markdown(rows: list[dict], args, argv: list[str]) -> str:
    import onnxruntime

    lines = [
        "# Inference latency: dense vs unstructured vs mean-folded vs structured", "",
        f"Command: `python bench/latency.py {shlex.join(argv)}`  ",
        f"Threads: {args.threads} (PyTorch intra-op and onnxruntime intra-op); "
        f"repeats: {args.repeats} interleaved rounds, median; "
        f"unstructured/mean-folded at {args.sparsity:g} sparsity, structured at "
        f"{args.channels:g} of the channels removed; random weights.  ",
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"{platform.processor() or platform.machine()}, "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.  ",
        f"Machine: {args.note}", "",
        "Ratio = time / dense time in the same runtime (lower is faster); ms = median per "
        "forward. *mean-folded / unstructured* is the fold cost (target <= 1.05). In "
        "onnxruntime both export to the same dense graph (no runtime exploits the zeros), "
        "so there the spread of those two columns around 1.0 is the measurement noise.", "",
        "| model | input | batch | runtime | dense ms | unstructured | mean-folded | "
        "mean-folded / unstructured | structured | structured ms | params (structured / "
        "dense) |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keyed = {(r["model"], r["batch"], r["runtime"], r["variant"]): r for r in rows}
    for (model, batch, rt, v), r in keyed.items():
        if v != "dense":
            continue
        g = {w: keyed[(model, batch, rt, w)] for w in VARIANTS}
        lines.append(
            f"| {model} | {'x'.join(map(str, r['input']))} | {batch} | {rt} | {r['ms']:.2f} | "
            f"{g['unstructured']['ratio']:.3f} | {g['mean-folded']['ratio']:.3f} | "
            f"{g['mean-folded']['ratio'] / g['unstructured']['ratio']:.3f} | "
            f"{g['structured']['ratio']:.3f} | {g['structured']['ms']:.2f} | "
            f"{g['structured']['params'] / r['params']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet20,resnet56,mobilenet_v2_cifar,resnet18")
    p.add_argument("--batches", default="1,64")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--sparsity", type=float, default=0.7, help="unstructured sparsity")
    p.add_argument("--channels", type=float, default=0.5, help="fraction of channels removed")
    p.add_argument("--imagenet-size", type=int, default=224, help="input size of resnet18")
    p.add_argument("--note", default="not stated", help="machine description for the doc")
    p.add_argument("--out", default="docs/results/latency.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            for b in (int(s) for s in args.batches.split(",")):
                rows += measure(name, b, args, Path(tmp))
                for r in rows[-8:]:
                    print(f"{r['model']:>20} b{r['batch']:<3} {r['runtime']:>11} "
                          f"{r['variant']:>12} {r['ms']:9.2f} ms  x{r['ratio']:.3f}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(rows, args, argv))
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
