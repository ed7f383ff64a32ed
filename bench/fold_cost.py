"""Cost of mean recovery at inference: folded vs zero-pruned forward, side by side.

``folded`` is pof's ``FoldedConv2d`` (the mean folded into the kernel at run time);
``old folded`` re-creates the earlier form (an all-ones convolution of the input for the
windowed sum, then a pass over the output) for comparison. Models are pruned at 70%,
permanent (``pof.remove``), eager PyTorch, interleaved rounds, medians.

    python bench/fold_cost.py --threads 1 --out docs/results/fold_cost.md
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import pof
from pof.models import create_model

CASES = (("resnet20", 64, 32), ("resnet20", 8, 32), ("resnet18", 8, 112))


def old_forward(self, x: torch.Tensor) -> torch.Tensor:
    """The pre-issue-10 FoldedConv2d: ``conv(x, W) + mean * windowed_sum(x)``."""
    out = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                   self.groups)
    ones = torch.ones(self.groups, self.in_channels // self.groups, *self.kernel_size)
    s = F.conv2d(x, ones, None, self.stride, self.padding, self.dilation, self.groups)
    s = s.repeat_interleave(self.out_channels // self.groups, 1)
    return out + self.recovery_mean.view(1, -1, 1, 1) * s


def measure(name: str, batch: int, size: int, rounds: int) -> dict[str, float]:
    models = {}
    for rec in ("zero", "mean"):
        torch.manual_seed(0)
        models[rec] = pof.remove(pof.prune(create_model(name).eval(), 0.7, recover=rec))
    x = torch.randn(batch, 3, size, size)
    new_forward = pof.FoldedConv2d.forward
    times: dict[str, list[float]] = {"zero": [], "folded": [], "old folded": []}
    try:
        with torch.no_grad():
            keys = list(times)
            for r in range(rounds + 1):  # the first round warms up; the order rotates
                for k in keys[r % 3:] + keys[:r % 3]:
                    pof.FoldedConv2d.forward = old_forward if k == "old folded" else new_forward
                    t = time.perf_counter()
                    models["zero" if k == "zero" else "mean"](x)
                    times[k].append(time.perf_counter() - t)
    finally:
        pof.FoldedConv2d.forward = new_forward
    return {k: statistics.median(v[1:]) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--note", default="not stated", help="machine description for the doc")
    p.add_argument("--out", default="docs/results/fold_cost.md")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    lines = ["# Fold cost: mean-recovered vs zero-pruned forward", "",
             f"Command: `python bench/fold_cost.py {shlex.join(sys.argv[1:])}`; torch "
             f"{torch.__version__}, {args.threads} thread(s), {args.rounds} interleaved rounds, "
             f"median.  ", f"Machine: {args.note}", "",
             "| model | batch | input | zero-pruned ms | folded / zero | old folded / zero |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, batch, size in CASES:
        m = measure(name, batch, size, args.rounds)
        lines.append(f"| {name} | {batch} | {size}x{size} | {1000 * m['zero']:.1f} | "
                     f"{m['folded'] / m['zero']:.3f} | {m['old folded'] / m['zero']:.3f} |")
        print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
