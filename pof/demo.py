"""``pof demo``: pof against gradual magnitude pruning on scikit-learn's digits, then a sweep.

Offline (the data ships with scikit-learn). Trains the same small CNN five times with the
same budget and seed — plainly, with GMP to 80%, with pof for 80%, with pof for the range
30–90% (one model for every sparsity) and CrAM-style for the same range — then prunes each
one-shot at several sparsities with zero and mean recovery, re-estimates BatchNorm
statistics from 8 unlabelled training batches (as deployment would), prints the table and writes
``sweep.png`` and ``weights.png``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm import tqdm

from .core.bn_recal import recalibrate_bn
from .data import load_dataset, make_loader
from .fileio import write_text
from .report import markdown_table, plot_sweep, plot_weight_histograms, write_json
from .sweep import bake_masks, sweep
from .training import TrainConfig, evaluate, train
from .training.checkpoint import model_from_checkpoint
from .training.distributed import pick_device

TARGET = 0.8
RANGE = "0.3:0.9"
SPARSITIES = (0.3, 0.5, 0.7, 0.8, 0.9)


def demo_configs(out: Path, quick: bool, seed: int,
                 device: str = "auto") -> dict[str, TrainConfig]:
    """The arms: identical budget, schedule, data order and seed."""
    common = dict(model="small_cnn", data="digits", epochs=1 if quick else 15,
                  batch_size=64, lr=0.1, weight_decay=5e-4, seed=seed, workers=0,
                  ckpt_every=10_000, progress=False, device=device)
    pof = dict(penalty="pof", penalty_weight=5.0, penalty_warmup=0 if quick else 3,
               penalty_refresh=20)
    arms = {"standard": dict(penalty="none"),
            "gmp": dict(penalty="gmp", sparsity=TARGET, gmp_every=10),
            "pof": dict(pof, sparsity=TARGET),
            "pof-range": dict(pof, sparsity=RANGE, penalty_form="energy"),
            "cram": dict(penalty="cram", sparsity=RANGE)}
    return {k: TrainConfig(**common, **v, out=str(out / k)) for k, v in arms.items()}


def _final_acc(run: Path) -> float:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["test_top1"]


def run_demo(out: str | Path = "pof-demo", quick: bool = False, seed: int = 0,
             device: str = "auto") -> list[dict]:
    """Run the demo on ``device``; returns the sweep rows (also written to ``out``)."""
    out = Path(out)
    t0 = time.time()
    dev = pick_device(device)
    configs = demo_configs(out, quick, seed, device)
    print(f"pof demo: small CNN on scikit-learn digits, {configs['pof'].epochs:g} epochs per "
          f"arm, GMP and pof target sparsity {TARGET:g}, range {RANGE}, seed {seed}")
    epochs = int(configs["pof"].epochs)
    with tqdm(total=epochs * len(configs), desc="training", unit="epoch",
              disable=None) as bar:  # None: bars on terminals only
        for name, cfg in configs.items():
            t = time.time()

            def tick(rec: dict, name: str = name) -> None:
                bar.update(1)
                bar.set_postfix_str(f"{name}: test acc {100 * rec['test_top1']:.1f}%")

            train(cfg, on_epoch=tick)
            tqdm.write(f"  trained {name} in {time.time() - t:.0f}s, dense test accuracy "
                       f"{100 * _final_acc(Path(cfg.out)):.2f}%")
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
        rows += sweep(model, lambda m: evaluate(m, loader, dev), sparsities, label=name,
                      progress=False, recalibrate=recal)
        models[name] = model
    table = markdown_table(rows)
    print("\ntest accuracy (%) after one-shot pruning and BatchNorm re-estimation, no "
          "retraining:\n")
    print(table)
    write_text(out / "sweep.md", table + "\n")
    write_json(rows, out / "sweep.json")
    plot_sweep(rows, out / "sweep.png", title="digits: accuracy after one-shot pruning")
    plot_weight_histograms(models, out / "weights.png")
    print(f"\nwrote {out / 'sweep.png'}, {out / 'weights.png'}, {out / 'sweep.md'} "
          f"({time.time() - t0:.0f}s)")
    return rows
