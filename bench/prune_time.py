"""One-shot prune time on a large model (default ResNet-50, 25.6M parameters), CPU.

    python bench/prune_time.py                      # layer and global scope, zero and mean
    python bench/prune_time.py --model resnet18 --repeats 5

Times ``pof.prune`` (mask computation + registration) and ``pof.remove`` (folding) with
``time.perf_counter``, median of ``--repeats`` runs, undoing with ``pof.unprune`` between.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time

import torch

import pof


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    model = pof.create_model(args.model)
    n = sum(p.numel() for p in model.parameters())
    results = []
    for sphere in (False, True):
        m = pof.to_sphere(pof.create_model(args.model)) if sphere else model
        for scope in ("layer", "global"):
            for recover in ("zero", "mean"):
                times = []
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    pof.prune(m, args.sparsity, scope=scope, recover=recover)
                    times.append(time.perf_counter() - t)
                    pof.unprune(m)
                row = {"model": args.model, "params": n, "sphere": sphere, "scope": scope,
                       "recover": recover, "prune_s": round(statistics.median(times), 4)}
                results.append(row)
                print(f"{args.model} ({n:,} params) sphere={sphere} {scope:6s} {recover}: "
                      f"prune {row['prune_s']:.3f}s (median of {args.repeats})")
    t = time.perf_counter()
    pof.prune(model, args.sparsity, recover="mean")
    pof.remove(model)
    print(f"prune + remove (fold) once, plain layer/mean: {time.perf_counter() - t:.3f}s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
