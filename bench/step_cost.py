"""Training-step cost of every arm of bench/on_the_fly.py, side by side in one process.

Builds one trainer per arm (the real ``pof.train`` step: forward, penalty, backward,
optimizer, GMP update) on the same CIFAR-10 batches and times the arms interleaved —
round r runs one step of every arm, in a rotating order — so that a busy machine slows
all arms alike. Reports the median step time and its ratio to the standard arm:

    python bench/step_cost.py                      # ResNet-20, batch 128, 30 rounds
    python bench/step_cost.py --rounds 10 --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from on_the_fly import ARMS, POF_COMMON
from runner import DATA, PRETRAINED

from pof.training import TrainConfig, Trainer
from pof.training.config import field_kind

ARM_NAMES = ("standard", "gmp70", "pof70", "pof-range", "cram", "pof-range-every2",
             "pof-range-kd", "pof-range-kdinit")


def config(arm: str, out: str, data: str) -> TrainConfig:
    opts = {**(POF_COMMON if "pof" in arm else {}), **ARMS[arm]}
    # each flag's text parsed as `pof train` parses it
    kw = {(k := f.replace("-", "_")): field_kind(k).parse(v) for f, v in opts.items()}
    if kw.get("subnet_teacher") == "init":  # the frozen teacher: the converged model
        kw["init"] = str(PRETRAINED)
    return TrainConfig(model="resnet20", data=data, out=out, epochs=1, batch_size=128,
                       workers=0, progress=False, gmp_every=50, **kw)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--arms", default=",".join(ARM_NAMES))
    p.add_argument("--steps-per-round", type=int, default=2,
                   help="consecutive steps timed together (2: an every-other-step arm "
                        "shows its average)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--out", type=Path, default=Path("docs/results/step_cost.json"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = tempfile.mkdtemp(prefix="pof-step-cost-")
    names = tuple(args.arms.split(","))
    if "standard" not in names or set(names) - set(ARM_NAMES):
        sys.exit(f"--arms: a subset of {','.join(ARM_NAMES)} with standard in it")
    runs = {a: Trainer(config(a, f"{tmp}/{a}", args.data), resume=False) for a in names}
    x, y = next(iter(runs["standard"]._loader(0)))
    times: dict[str, list[float]] = {a: [] for a in names}
    n = args.steps_per_round
    for r in range(args.warmup + args.rounds):
        k = r % len(names)
        for a in names[k:] + names[:k]:
            run = runs[a]
            run.model.train()
            t = time.perf_counter()
            for _ in range(n):
                run.train_step(x, y)
            if r >= args.warmup:
                times[a].append((time.perf_counter() - t) / n)
    base = statistics.median(times["standard"])
    rows = [{"arm": a, "median_s": statistics.median(times[a]),
             "ratio": statistics.median(times[a]) / base} for a in names]
    print(f"ResNet-20, batch 128, {args.rounds} interleaved rounds of {n} steps, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print("| arm | median step (s) | × standard |\n|---|---:|---:|")
    for r in rows:
        print(f"| {r['arm']} | {r['median_s']:.3f} | {r['ratio']:.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": " ".join(sys.argv), "threads":
                                    torch.get_num_threads(), "rounds": args.rounds,
                                    "steps_per_round": n,
                                    "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
