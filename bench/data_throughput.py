"""Is the data pipeline a bottleneck? Loader throughput vs a synthetic-data training step.

    python bench/data_throughput.py                          # CIFAR-10 copy, ResNet-20
    python bench/data_throughput.py --data digits --model small_cnn

Measures, alternating in one run: (a) images/s of the training loader (decode-once cache,
random crop + flip on tensors, normalisation) and (b) images/s of one ResNet-20 training
step on a synthetic batch already in memory. The loader is not the bottleneck when
(a) is much larger than (b); the printed ratio is (b)/(a), the share of a step the loader
would add if it ran serially.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import pof
from pof.data import load_dataset, make_loader


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("POF_CIFAR10"), required=
                    "POF_CIFAR10" not in os.environ, help="data set (default: $POF_CIFAR10)")
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=50, help="loader batches per round")
    args = ap.parse_args()
    print("command:", shlex.join([sys.executable, *sys.argv]))
    t = time.perf_counter()
    ds = load_dataset(args.data, "train")
    print(f"load_dataset: {time.perf_counter() - t:.2f}s ({len(ds)} images, cached after the "
          "first run)")
    c, h, w = ds.spec.image_size
    model = pof.create_model(args.model, num_classes=ds.spec.num_classes).to(
        memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch, c, h, w).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, ds.spec.num_classes, (args.batch,))
    load_rate, step_rate = [], []
    for r in range(args.rounds):
        it = iter(make_loader(ds, args.batch, train=True, seed=0, epoch=r))
        t = time.perf_counter()
        for _ in range(args.batches):
            next(it)
        load_rate.append(args.batches * args.batch / (time.perf_counter() - t))
        t = time.perf_counter()
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        step_rate.append(3 * args.batch / (time.perf_counter() - t))
    lr, sr = statistics.median(load_rate), statistics.median(step_rate)
    print(f"loader {lr:,.0f} img/s   training step (synthetic) {sr:,.0f} img/s   "
          f"loader share of a step {100 * sr / lr:.1f}%")


if __name__ == "__main__":
    main()
