"""``pof demo``: one pof range model against GMP and one-shot pruning, on scikit-learn's digits.

Offline (the data ships with scikit-learn). Trains a deliberately small CNN (width 8, about
8k prunable weights, where every pruned weight counts) three times with the same budget,
schedule, data order and seed — plainly, with gradual magnitude pruning (GMP) for one
target sparsity, and with pof for the range 30–90% (one model for every sparsity in it) —
then prunes each one-shot at 30–90% with mean recovery, re-estimates BatchNorm statistics
from 8 unlabelled training batches (as deployment would), prints the table and, from the
measured numbers, which model to pick for which need; writes ``sweep.md``,
``sweep.json``, ``sweep.png`` and ``weights.png``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .core.bn_recal import recalibrate_bn
from .data import load_dataset, make_loader
from .report import markdown_table
from .sweep import bake_masks, sweep
from .training import TrainConfig, evaluate, train
from .training.checkpoint import model_from_checkpoint
from .training.distributed import pick_device
from .workflows.sweeps import write_sweep

TARGET = 0.8
RANGE = (0.3, 0.9)
SPARSITIES = (0.3, 0.5, 0.7, 0.8, 0.9)
WIDTH = 8
EPOCHS = 30
LEGEND = (f"standard: dense training; gmp80: gradual magnitude pruning to {100 * TARGET:g}% "
          f"during training; pof-range: one pof model for every sparsity in "
          f"{100 * RANGE[0]:g}-{100 * RANGE[1]:g}%")


def demo_configs(out: Path, quick: bool, seed: int,
                 device: str = "auto") -> dict[str, TrainConfig]:
    """The arms: identical model, budget, schedule, data order and seed."""
    common = dict(model="small_cnn", model_kwargs={"width": WIDTH}, data="digits",
                  epochs=1 if quick else EPOCHS, batch_size=64, lr=0.1, weight_decay=5e-4,
                  seed=seed, workers=0, ckpt_every=10_000, progress=False, device=device)
    arms = {"standard": dict(penalty="none"),
            "gmp80": dict(penalty="gmp", sparsity=TARGET, gmp_every=10),
            "pof-range": dict(penalty="pof", sparsity=f"{RANGE[0]}:{RANGE[1]}",
                              penalty_form="energy", penalty_weight=5.0,
                              penalty_warmup=0 if quick else 3, penalty_refresh=20)}
    return {k: TrainConfig(**common, **v, out=str(out / k)) for k, v in arms.items()}


def _final_acc(run: Path) -> float:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["test_top1"]


def advice(rows: list[dict], target: float = TARGET,
           span: tuple[float, float] = RANGE) -> list[str]:
    """Which model to pick for which need, from the measured sweep ``rows`` (top-1 of the
    dense row and of each mean-recovered sparsity, per label)."""
    dense = {r["label"]: r["top1"] for r in rows if r["recover"] == "dense"}
    at: dict[str, dict[float, float]] = {}
    for r in rows:
        if r["recover"] == "mean":
            at.setdefault(r["label"], {})[r["sparsity"]] = r["top1"]

    def pick(scores: dict[str, float], what: str) -> str:
        ranked = sorted(scores, key=scores.get, reverse=True)
        best = ranked[0]
        close = [k for k in ranked[1:] if scores[best] - scores[k] < 0.01]
        far = [k for k in ranked[1:] if k not in close]
        text = " or ".join(f"{k} {100 * scores[k]:.2f}%" for k in [best, *close])
        text += " (within a point)" if close else ""
        if far:
            text += "; " + ", ".join(f"{k} {100 * scores[k]:.2f}%" for k in far)
        return f"{what}: {text}"

    lo, hi = span
    inside = [s for s in sorted({s for v in at.values() for s in v}) if lo <= s <= hi]
    worst = {k: min(v[s] for s in inside) for k, v in at.items() if all(s in v for s in inside)}
    return [
        pick(dense, "no pruning (as trained; gmp80 is already sparse)"),
        pick({k: v[target] for k, v in at.items() if target in v},
             f"exactly {100 * target:g}%, known before training"),
        pick(worst, f"any sparsity from {100 * inside[0]:g}% to {100 * inside[-1]:g}%, "
                    "chosen at deploy time, from one training run (its worst)"),
    ]


def run_demo(out: str | Path = "pof-demo", quick: bool = False, seed: int = 0,
             device: str = "auto") -> list[dict]:
    """Run the demo on ``device``; returns the sweep rows (also written to ``out``).

    On a CPU it runs on one thread: for this tiny model that is the fastest (about 3x
    faster than two threads on a busy 2-core machine) and gives the same numbers on every
    run; the thread count is restored afterwards.
    """
    dev = pick_device(device)
    threads = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(1)
    try:
        return _run(Path(out), quick, seed, device, dev)
    finally:
        torch.set_num_threads(threads)


def _run(out: Path, quick: bool, seed: int, device: str, dev: torch.device) -> list[dict]:
    t0 = time.time()
    configs = demo_configs(out, quick, seed, device)
    epochs = int(configs["standard"].epochs)
    print(f"pof demo: a small CNN (width {WIDTH}) on scikit-learn digits, {epochs} epochs per "
          f"arm, seed {seed}: standard training, GMP for {100 * TARGET:g}%, pof for "
          f"{100 * RANGE[0]:g}-{100 * RANGE[1]:g}%")
    with tqdm(total=epochs * len(configs), desc="training", unit="epoch",
              disable=None) as bar:  # None: bars on terminals only
        for name, cfg in configs.items():
            t = time.time()

            def tick(rec: dict, name: str = name) -> None:
                bar.update(1)
                bar.set_postfix_str(f"{name}: test acc {100 * rec['test_top1']:.1f}%")

            train(cfg, on_epoch=tick)
            tqdm.write(f"  trained {name} in {time.time() - t:.0f}s, test accuracy as "
                       f"trained {100 * _final_acc(Path(cfg.out)):.2f}%")
    test = load_dataset("digits", "test", progress=False)
    loader = make_loader(test, 512, train=False)
    train_set = load_dataset("digits", "train", progress=False)

    batches = 2 if quick else 8

    def recal(model) -> None:  # BatchNorm re-estimation: unlabelled batches, no gradients
        recalibrate_bn(model, make_loader(train_set, 64, train=True, augment=False, seed=0),
                       batches)

    sparsities = SPARSITIES[1::2] if quick else SPARSITIES
    rows, models = [], {}
    for name, cfg in configs.items():
        model, _ = model_from_checkpoint(Path(cfg.out) / "final.safetensors")
        bake_masks(model.to(dev))
        rows += sweep(model, lambda m: evaluate(m, loader, dev), sparsities,
                      recovers=("mean",), label=name, progress=False, recalibrate=recal)
        models[name] = model
    table = markdown_table(rows)
    print(f"\ntest accuracy (%, {len(test)} images) after one-shot magnitude pruning at each "
          "sparsity, mean recovery and BatchNorm re-estimation, no retraining (a model saved "
          "sparse stays as saved at lower sparsities):\n")
    print(table)
    print(f"\n{LEGEND}\nwhich model to pick, by need:")
    for line in advice(rows, TARGET if TARGET in sparsities else sparsities[-1]):
        print(f"- {line}")
    write_sweep(rows, models, out, title="digits: accuracy after one-shot pruning")
    print(f"\nwrote {out / 'sweep.png'}, {out / 'weights.png'}, {out / 'sweep.md'} "
          f"({time.time() - t0:.0f}s)")
    return rows
