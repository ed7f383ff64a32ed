"""Channel widths rounded to multiples of N (``pof prune --round-to N``): latency and accuracy.

A channel-range checkpoint is exported at each fraction of WIDTHS exactly (every group keeps
``C - round(k * C)`` channels, round_to 1) and with the kept channels rounded to each
multiple of ``--round-to`` (default 8 and 16, what ``pof prune --speedup`` also measures),
and all the exports are timed in one interleaved onnxruntime run
(batch 1 and 64, one thread), so they are compared side by side; the dense model is
exported once per multiple, and how far apart those identical exports time is the run's
noise floor. With ``--data``, each width is also deployed with ``pof prune --round-to N
--recover mean --bn-recal 20`` for its top-1.

    python bench/channel_rounding.py runs/structured_range/resnet20-range-b4-s0/final.safetensors
    python bench/channel_rounding.py CKPT --round-to 8 --no-accuracy --out /tmp/r.json  # smoke

Writes docs/results/structured/rounding-<arch>.json (or ``--out``) and prints its table.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runner import DATA, ROOT, pof, portable

WIDTHS = (0.0, 0.125, 0.25, 0.375, 0.5)


def latencies(ckpt: Path, widths: list[float], round_to: list[int], batches: tuple[int, ...],
              repeats: int) -> list[dict]:
    """Median ms of every (width, multiple in {1, *round_to}) export, per batch,
    interleaved; a rounding that changes nothing is measured again (the noise floor)."""
    from pof.export.latency import width_latencies
    from pof.training.checkpoint import model_from_checkpoint, read_meta
    from pof.workflows.steps import example_input

    model, _ = model_from_checkpoint(ckpt)
    return width_latencies(model, example_input(read_meta(ckpt)), widths, batch=batches,
                           repeats=repeats, round_to=sorted({1, *round_to}), dedupe=False)


def accuracy(ckpt: Path, k: float, round_to: int, data: str) -> float:
    """Top-1 % of ``ckpt`` deployed at ``k`` with ``--round-to``, mean fill, BN re-estimated."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = pof("prune", str(ckpt), "--structure", "channel", "--sparsity", f"{k:g}",
                  "--round-to", str(round_to), "--recover", "mean", "--bn-recal", "20",
                  "--data", data, "--out", tmp)
        print("$ " + " ".join(cmd), flush=True)
        out = subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True).stdout
    return float(re.search(r"after ([\d.]+)%", out)[1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--round-to", default="8,16", help="multiples to compare with the exact "
                   "widths (default 8,16)")
    p.add_argument("--widths", default=",".join(f"{w:g}" for w in WIDTHS))
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--no-accuracy", action="store_true")
    p.add_argument("--note", default="", help="the machine's load, for the record")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    from pof.core.channels import round_to_list
    from pof.errors import PofError
    from pof.export.latency import machine, runtime
    from pof.training.checkpoint import read_meta

    args.checkpoint = args.checkpoint.resolve()  # the pof commands run from the root
    if not args.checkpoint.is_file():
        p.error(f"no checkpoint at {args.checkpoint}")
    try:
        rounds = [n for n in round_to_list(args.round_to) if n > 1]
    except PofError as e:
        p.error(str(e))
    if not rounds:
        p.error("--round-to: give at least one multiple above 1")
    widths = [float(w) for w in args.widths.split(",")]
    t = time.time()
    rows = latencies(args.checkpoint, widths, rounds, (1, 64), args.repeats)
    if not args.no_accuracy:
        for k in widths:
            for n in (1, *rounds):
                top1 = accuracy(args.checkpoint, k, n, args.data)
                for r in rows:
                    if r["sparsity"] == k and r["round_to"] == n:
                        r["top1"] = top1
    arch = read_meta(args.checkpoint)["arch"]["name"]
    out = args.out or ROOT / "docs" / "results" / "structured" / f"rounding-{arch}.json"
    record = {"command": "python bench/channel_rounding.py " + shlex.join(
                  portable(a) for a in (sys.argv[1:] if argv is None else argv)),
              "checkpoint": portable(str(args.checkpoint)), "round_to": rounds,
              "runtime": runtime(1), "machine": machine(), "repeats": args.repeats,
              "note": args.note, "date": time.strftime("%Y-%m-%d"),
              "wall_s": round(time.time() - t, 1), "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print("\n".join(table(record)))
    print(f"wrote {out}")


def multiples(record: dict) -> list[int]:
    """The multiples a record compared with the exact widths (older records: one int)."""
    n = record["round_to"]
    return list(n) if isinstance(n, list) else [n]


def table(record: dict) -> list[str]:
    """Markdown, a row per width and multiple: conv channels removed, ms and speed-up at
    batch 64 and 1 (against the exact dense export), top-1 if measured."""
    lines = ["| channels removed (asked) | rounded to | conv channels removed | ms b64 | "
             "speed-up b64 | ms b1 | speed-up b1 | top-1 |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    at = {(r["sparsity"], r["round_to"], r["batch"]): r for r in record["rows"]}
    full = sum(at[(0.0, 1, 64)]["channels"])
    for k in sorted({r["sparsity"] for r in record["rows"]}):
        for n in (1, *multiples(record)):
            if (k, n, 64) not in at:
                continue
            r64, r1 = at[(k, n, 64)], at.get((k, n, 1))
            gone = 1 - sum(r64["channels"]) / full
            top1 = f"{r64['top1']:.2f}" if "top1" in r64 else "–"
            b1 = f"{r1['ms']:.3f} | {r1['speedup']:.2f}x" if r1 else "– | –"
            lines.append(f"| {100 * k:g}% | {n if n > 1 else 'exact'} | {100 * gone:.1f}% | "
                         f"{r64['ms']:.2f} | {r64['speedup']:.2f}x | {b1} | {top1} |")
    return lines


def noise(record: dict) -> float | None:
    """How far apart (fraction) the dense model's identical exports timed at batch 64."""
    dense = [r["ms"] for r in record["rows"] if r["batch"] == 64 and r["sparsity"] == 0.0]
    return max(dense) / min(dense) - 1 if len(dense) > 1 else None


if __name__ == "__main__":
    main()
