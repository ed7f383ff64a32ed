"""Evidence at scale: converged models, ResNet-20/56 and MobileNetV2, several seeds, one GPU.

One prepared script for a GPU machine (it runs on CPU too, for days). Every step is
skipped when its output exists and killed trainings resume, so it can be stopped and
started again; independent runs go ``--jobs`` at a time (several CIFAR runs share one GPU):

1. converged standard models: ResNet-56 and MobileNetV2-CIFAR from
   recipes/cifar10_{resnet56,mobilenet_v2_cifar}_standard.yaml (ResNet-20's is in
   ../shared/pretrained);
2. the on-the-fly protocol (bench/on_the_fly.py: standard + one-shot with and without
   BatchNorm re-estimation, GMP, dedicated pof, pof range, CrAM-style; equal budget;
   sweeps at 0/30/50/70/80/90%): ResNet-20 seeds 0-2, ResNet-56 seed 0;
3. MobileNetV2-CIFAR at 70%, first conv dense, with fine-tuning (the paper's claim):
   conventional = one-shot magnitude pruning of the standard model, then F epochs of
   fine-tuning with fixed masks; GMP = B epochs of GMP to 70% from the standard model,
   then the same F epochs; pof = B epochs of pof for 70%, one-shot prune with mean
   recovery, then the same F epochs. Drop = standard dense top-1 minus the final top-1.

    python bench/at_scale.py --device cuda --jobs 8
    python bench/at_scale.py --steps mbv2 --seeds 0 --device cpu     # one part only

Results: docs/results/on_the_fly*.md (step 2, via bench/on_the_fly.py) and
docs/results/mobilenet_v2_70.md (step 3), each with its commands and wall times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from on_the_fly import DATA, PRETRAINED, ROOT, pof, run, train_once  # noqa: E402

STEPS = ("pretrain", "on_the_fly", "mbv2")


def last_top1(run_dir: Path) -> float:
    """Test top-1 % at the end of a run (its last metrics line)."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return 100 * json.loads(lines[-1])["test_top1"]


def pretrain(model: str, args: argparse.Namespace, log: Path) -> Path:
    recipe = ROOT / "recipes" / f"cifar10_{model}_standard.yaml"
    return train_once(pof("train", "--config", str(recipe), "--data", str(args.data),
                          "--epochs", f"{args.pretrain_epochs:g}", "--device", args.device,
                          "--progress", "false"), args.out / f"{model}-standard", log)


def finetune(pruned: Path, out: Path, args: argparse.Namespace, log: Path, seed: int) -> float:
    train_once(pof("finetune", str(pruned), "--data", str(args.data), "--epochs",
                   f"{args.ft_epochs:g}", "--lr", f"{args.ft_lr:g}", "--seed", str(seed),
                   "--device", args.device, "--progress", "false"), out, log)
    return last_top1(out)


def prune(ckpt: Path, out: Path, recover: str, args: argparse.Namespace, log: Path) -> Path:
    if not (out / "pruned.safetensors").is_file():
        run(pof("prune", str(ckpt), "--sparsity", "0.7", "--recover", recover, "--device",
                args.device, "--data", str(args.data), "--out", str(out)), log)
    return out / "pruned.safetensors"


def mbv2_arm(arm: str, seed: int, std: Path, args: argparse.Namespace, log: Path) -> dict:
    """One MobileNetV2 arm at 70% for one seed: its top-1 after fine-tuning."""
    d = args.out / "mbv2" / f"{arm}-s{seed}"
    common = ("--model", "mobilenet_v2_cifar", "--data", str(args.data), "--init", str(std),
              "--epochs", f"{args.epochs:g}", "--lr", "0.05", "--weight-decay", "4e-5",
              "--schedule", "cosine", "--seed", str(seed), "--device", args.device,
              "--progress", "false")
    if arm == "conventional":
        pruned = prune(std, d / "pruned", "zero", args, log)
    elif arm == "gmp":
        pruned = train_once(pof("train", *common, "--penalty", "gmp", "--sparsity", "0.7"),
                            d / "train", log)
    else:
        final = train_once(pof("train", *common, "--penalty", "pof", "--sparsity", "0.7",
                               "--penalty-form", "sine", "--penalty-weight", "5",
                               "--penalty-warmup", "1"), d / "train", log)
        pruned = prune(final, d / "pruned", "mean", args, log)
    return {"arm": arm, "seed": seed, "top1": finetune(pruned, d / "ft", args, log, seed)}


def mbv2_report(rows: list[dict], dense: float, args: argparse.Namespace) -> None:
    lines = ["| arm | top-1 after fine-tuning | drop vs standard dense |", "|---|---:|---:|"]
    drops = {}
    for arm in ("conventional", "gmp", "pof"):
        v = [r["top1"] for r in rows if r["arm"] == arm]
        if v:
            drops[arm] = dense - statistics.mean(v)
            lines.append(f"| {arm} | {statistics.mean(v):.2f} (seeds: "
                         f"{', '.join(f'{x:.2f}' for x in v)}) | {drops[arm]:.2f} |")
    target = ""
    others = [d for a, d in drops.items() if a != "pof"]
    if "pof" in drops and others:
        best = min(others)
        target = (f"\nTarget (pof's drop at most half of the best conventional drop): pof "
                  f"{drops['pof']:.2f} vs {best:.2f} / 2 = {best / 2:.2f}: "
                  f"{'met' if drops['pof'] <= best / 2 else 'missed'}.\n")
    text = "\n".join(["# MobileNetV2-CIFAR at 70% with fine-tuning (generated)", "",
                      f"Generated by `python bench/at_scale.py --steps mbv2` on "
                      f"{args.device}; B = {args.epochs:g}, F = {args.ft_epochs:g} epochs; "
                      f"standard dense {dense:.2f}%. Commands and wall times: "
                      f"{args.out / 'commands.jsonl'}.", "", *lines, target])
    (args.docs / "mobilenet_v2_70.md").write_text(text)
    print(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", default=",".join(STEPS), help=f"subset of {','.join(STEPS)}")
    p.add_argument("--device", default="cuda")
    p.add_argument("--jobs", type=int, default=8, help="runs at once")
    p.add_argument("--seeds", default="0,1,2", help="ResNet-20 seeds (ResNet-56: the first; "
                   "MobileNetV2: the first two)")
    p.add_argument("--pretrain-epochs", type=float, default=30)
    p.add_argument("--epochs", type=float, default=4, help="budget B of every arm")
    p.add_argument("--ft-epochs", type=float, default=4, help="fine-tuning budget F")
    p.add_argument("--ft-lr", type=float, default=0.01)
    p.add_argument("--data", type=Path, default=Path(os.environ.get("POF_CIFAR10", DATA)))
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "at_scale")
    p.add_argument("--docs", type=Path, default=ROOT / "docs" / "results")
    args = p.parse_args()
    steps = args.steps.split(",")
    if set(steps) - set(STEPS) or args.jobs < 1:
        sys.exit(f"--steps takes {','.join(STEPS)}; --jobs at least 1")
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "commands.jsonl"
    std = {"resnet20": PRETRAINED}
    with ThreadPoolExecutor(args.jobs) as pool:
        models = [m for m, step in (("resnet56", "on_the_fly"), ("mobilenet_v2_cifar", "mbv2"))
                  if "pretrain" in steps or step in steps]
        if models:
            for m, path in zip(models, pool.map(lambda m: pretrain(m, args, log), models),
                               strict=True):
                std[m] = path
        if "on_the_fly" in steps:
            otf = [sys.executable, str(ROOT / "bench" / "on_the_fly.py"), "--device",
                   args.device, "--epochs", f"{args.epochs:g}", "--data", str(args.data)]
            jobs = [[*otf, "--seeds", args.seeds, "--jobs", str(max(1, args.jobs // 2))],
                    [*otf, "--model", "resnet56", "--init", str(std["resnet56"]), "--seeds",
                     str(seeds[0]), "--jobs", str(max(1, args.jobs // 2))]]
            list(pool.map(lambda c: subprocess.run(c, check=True, cwd=ROOT), jobs))
        if "mbv2" in steps:
            runs = [(a, s) for s in seeds[:2] for a in ("conventional", "gmp", "pof")]
            rows = list(pool.map(
                lambda r: mbv2_arm(*r, std["mobilenet_v2_cifar"], args, log), runs))
            args.docs.mkdir(parents=True, exist_ok=True)
            mbv2_report(rows, last_top1(std["mobilenet_v2_cifar"].parent), args)


if __name__ == "__main__":
    main()
