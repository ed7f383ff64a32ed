"""Penalty overhead per training step, measured side by side (interleaved) in one run.

For each model it times SGD training steps on synthetic data in three variants, interleaved
round-robin so machine noise hits all of them alike:
  standard  plain model, task loss only
  sphere    the same model after pof.to_sphere, task loss only
  pof       sphere model, task loss + PrunePenalty (forward and penalty share the
            parametrized weights via torch.nn.utils.parametrize.cached())
The pruned set's re-selection (every --refresh-every steps) is timed apart and added to the
pof step, amortised. It prints median step times and the ratios pof/sphere (the penalty's
own cost) and pof/standard (everything pof adds). Step times are noisy and, for big models,
far larger than the penalty, so it also times the penalty alone (forward + backward on the
effective weights, median of 20, plus the amortised re-selection) as a share of a standard
step: that is the overhead figure to quote.

    python bench/penalty_overhead.py                       # resnet20 @32px and resnet18 @224px
    python bench/penalty_overhead.py --models resnet20 --steps 20
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time

import torch
from torch import nn
from torch.nn.utils import parametrize

import pof

SIZES = {"resnet20": 32, "resnet56": 32, "mobilenet_v2_cifar": 32, "resnet18": 224,
         "resnet50": 224, "mobilenet_v2": 224}


def make_step(model: nn.Module, penalty: pof.PrunePenalty | None, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with parametrize.cached():
            loss = loss_fn(model(x), y)
            if penalty is not None:
                loss = loss + penalty()
        loss.backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet20,resnet18")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=None, help="timed steps per variant")
    ap.add_argument("--sparsity", type=float, default=0.7)
    ap.add_argument("--refresh-every", type=int, default=50)
    ap.add_argument("--json", default=None, help="also write results here")
    args = ap.parse_args()
    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")
    results = []
    for name in args.models.split(","):
        size = SIZES[name]
        steps = args.steps or (20 if size <= 64 else 2)
        torch.manual_seed(0)
        x = torch.randn(args.batch, 3, size, size)
        y = torch.randint(0, 10, (args.batch,))
        plain = pof.create_model(name, num_classes=10)
        sphere = pof.to_sphere(pof.create_model(name, num_classes=10))
        penalty = pof.PrunePenalty(sphere, args.sparsity, refresh_every=args.refresh_every)
        variants = {
            "standard": make_step(plain, None, x, y),
            "sphere": make_step(sphere, None, x, y),
            "pof": make_step(sphere, penalty, x, y),
        }
        times: dict[str, list[float]] = {k: [] for k in variants}
        for step in variants.values():  # warm-up
            step()
        t0 = time.perf_counter()
        for _ in range(steps):
            for k, step in variants.items():
                t = time.perf_counter()
                step()
                times[k].append(time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(3):
            penalty.refresh()
        refresh_s = (time.perf_counter() - t) / 3
        # the penalty alone (forward + backward) on leaf copies of the effective weights:
        # robust to step-time noise, which on big models dwarfs the penalty
        leaves = [w.detach().clone().requires_grad_() for w in penalty.weights()]
        alone = []
        for _ in range(21):
            t = time.perf_counter()
            energy, margin = penalty._terms(leaves)
            (penalty.weight * (energy + penalty.beta * margin)).backward()
            alone.append(time.perf_counter() - t)
        alone_s = statistics.median(alone[1:]) + refresh_s / args.refresh_every
        med = {k: statistics.median(v) for k, v in times.items()}
        med["pof"] += refresh_s / args.refresh_every  # re-selection, amortised
        row = {"model": name, "input": size, "batch": args.batch, "steps": steps,
               **{f"{k}_s": round(v, 4) for k, v in med.items()},
               "refresh_s": round(refresh_s, 4), "penalty_alone_s": round(alone_s, 5),
               "penalty_share": round(alone_s / med["standard"], 4),
               "penalty_overhead": round(med["pof"] / med["sphere"] - 1, 4),
               "pof_vs_standard": round(med["pof"] / med["standard"] - 1, 4),
               "wall_s": round(time.perf_counter() - t0, 1)}
        results.append(row)
        print(f"{name} @{size}px batch {args.batch}, median of {steps} steps: "
              f"standard {med['standard']:.3f}s  sphere {med['sphere']:.3f}s  "
              f"pof {med['pof']:.3f}s  | penalty alone {1000 * alone_s:.1f}ms = "
              f"{100 * row['penalty_share']:.2f}% of a standard step | step ratios: "
              f"pof/sphere {100 * row['penalty_overhead']:+.1f}%  "
              f"pof vs standard {100 * row['pof_vs_standard']:+.1f}%  (wall {row['wall_s']}s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
