"""CIFAR-10 reproduction: pof vs conventional pruning with an equal training budget.

Runs the protocol of docs/results/archive/cifar10_short_schedule.md through the real ``pof`` CLI,
printing every command before it runs it, then writes the tables and plots:

    python bench/cifar10.py --profile quick     # ResNet-20, 1 seed, short schedule (<=45 min)
    python bench/cifar10.py --profile medium    # + L1, pof50/90, a 2nd seed, fine-tuning
    python bench/cifar10.py --profile forms     # pof90 with the sine vs the energy penalty
    python bench/cifar10.py --profile full      # all arms, 2 seeds, ResNet-56, MobileNetV2
    python bench/cifar10.py --profile quick --report-only   # just rebuild the report

Protocol (per model): train a standard "pretrained" model; continue training it for the
same number of epochs in each arm — standard (no penalty), L1, pof (sphere + penalty) at
target sparsity 0.5/0.7/0.9 — with the same schedule, augmentation and seeds; optionally pof
from scratch with the pretraining + continuation budget. Each final model is pruned one-shot,
layer-wise, first conv dense, at every sweep sparsity with zero fill and mean recovery (no
fine-tuning, no BatchNorm recalibration). Fine-tuning arm: prune standard (zero fill) and
pof (mean recovery) at 70%/90% and fine-tune both with fixed masks for the same epochs.

Every run is resumable: a finished run (final.safetensors) is skipped, an interrupted one
continues with ``--resume``; kill the script at any time and start it again. Reports go to
docs/results/archive/ (``--results``): this is the earlier short-schedule study; "±" is half
the range over seeds, as on every current page.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPARSITIES = (0.3, 0.5, 0.7, 0.8, 0.9)


@dataclass
class ModelPlan:
    """What to run for one architecture."""

    model: str
    pre_epochs: float
    arm_epochs: float
    arms: tuple[str, ...]
    seeds: tuple[int, ...]
    extra: tuple[tuple[str, int], ...] = ()  # more (arm, seed) runs beyond arms x seeds
    scratch: tuple[str, ...] = ()  # pof arms also trained from scratch (seed 0)
    finetune: tuple[float, ...] = ()  # sparsities with a fine-tuning arm
    ft_seeds: tuple[int, ...] | None = None  # seeds fine-tuned (default: all)
    ft_epochs: float = 2
    bn_recal_seeds: tuple[int, ...] = (0,)  # runs also swept with BatchNorm recalibration
    model_kwargs: dict = field(default_factory=dict)
    # chosen over 5 on ResNet-20 (docs/results/archive/cifar10_short_schedule.md, "Tuning")
    pof_weight: float = 20
    lr: float = 0.1
    wd: float = 5e-4


PROFILES: dict[str, list[ModelPlan]] = {
    "quick": [ModelPlan("resnet20", pre_epochs=5, arm_epochs=3, arms=("standard", "pof70sine"),
                        seeds=(0,))],
    # penalty form at high sparsity: the quadratic energy vs its square root (the sine)
    "forms": [ModelPlan("resnet20", pre_epochs=5, arm_epochs=3,
                        arms=("pof90sine", "pof90", "pof70sine"), seeds=(0,))],
    "tuning": [ModelPlan("resnet20", pre_epochs=5, arm_epochs=3, arms=("pof70w5", "pof70"),
                         seeds=(0,))],
    # every ResNet-20 arm x 2 seeds, pof70 from scratch, fine-tuning at 70/90%, and a
    # narrow MobileNetV2 (the paper's fine-tuning case) on a short schedule (~4 CPU-hours)
    "medium": [ModelPlan("resnet20", pre_epochs=5, arm_epochs=3,
                         arms=("standard", "pof70sine", "pof90sine", "pof50sine", "l1"),
                         seeds=(0, 1), scratch=("pof70sine",), finetune=(0.7, 0.9),
                         ft_epochs=1, ft_seeds=(0,)),
               ModelPlan("mobilenet_v2_cifar", pre_epochs=4, arm_epochs=2,
                         arms=("standard", "pof70sine"), seeds=(0,), finetune=(0.7,), ft_epochs=1,
                         model_kwargs={"width_mult": 0.35}, lr=0.05, wd=4e-5,
                         pof_weight=100)],
    "full": [
        ModelPlan("resnet20", pre_epochs=15, arm_epochs=8,
                  arms=("standard", "l1", "pof50sine", "pof70sine", "pof90sine"),
                  seeds=(0, 1), scratch=("pof70sine",), finetune=(0.7, 0.9), ft_epochs=2),
        # the penalty is a mean over layers: deeper nets get a larger weight (untested guess)
        ModelPlan("resnet56", pre_epochs=8, arm_epochs=4, arms=("standard", "pof70sine"),
                  seeds=(0,), pof_weight=50),
        ModelPlan("mobilenet_v2_cifar", pre_epochs=8, arm_epochs=4,
                  arms=("standard", "pof70sine"),
                  seeds=(0,), finetune=(0.7,), ft_epochs=2, model_kwargs={"width_mult": 0.5},
                  lr=0.05, wd=4e-5, pof_weight=100),
    ],
}

@dataclass(frozen=True)
class Arm:
    """One training arm as the config values it sets (``weight=None``: the plan's)."""

    name: str
    penalty: str = "none"
    sparsity: float = 0.5
    form: str = "energy"
    weight: float | None = None
    l1_weight: float = 5e-5

    def config(self, plan: ModelPlan) -> dict:
        """The TrainConfig values this arm sets on top of the plan's."""
        if self.penalty == "pof":
            return {"penalty": "pof", "sparsity": self.sparsity, "penalty_form": self.form,
                    "penalty_weight": float(self.weight or plan.pof_weight),
                    "penalty_warmup": 0.5, "penalty_refresh": 50}
        if self.penalty == "l1":
            return {"penalty": "l1", "l1_weight": self.l1_weight}
        return {"penalty": "none"}

    def flags(self, plan: ModelPlan) -> list[str]:
        return [x for k, v in self.config(plan).items()
                for x in ("--" + k.replace("_", "-"), str(v))]


ARMS = {a.name: a for a in [
    Arm("standard"), Arm("l1", "l1"),
    Arm("pof70w5", "pof", 0.7, weight=5),  # the first, weaker ResNet-20 setting (tuning note)
    *(Arm(f"pof{p}{f if f == 'sine' else ''}", "pof", p / 100, f)
      for p in (50, 70, 90) for f in ("energy", "sine")),
]}

FT_RECOVER = {"standard": "zero"}  # conventional pruning; pof arms use mean recovery


def plan_dir(root: Path, plan: ModelPlan) -> Path:
    """Runs of one model and schedule: profiles with the same schedule share finished runs."""
    kw = "".join(f"-{k.split('_')[0]}{v:g}" for k, v in sorted(plan.model_kwargs.items()))
    return root / f"{plan.model}{kw}-e{plan.pre_epochs:g}+{plan.arm_epochs:g}"


def pof_arm(plan: ModelPlan, s: float) -> str:
    """The plan's pof arm for target sparsity ``s`` (``pof70``, or ``pof70sine`` if listed)."""
    return next((a for a in plan.arms if ARMS[a].penalty == "pof"
                 and abs(ARMS[a].sparsity - s) < 1e-9), f"pof{round(100 * s)}")


def arm_flags(plan: ModelPlan, arm: str) -> list[str]:
    """Training flags of the arm called ``arm`` (see ``ARMS``)."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; known: {', '.join(ARMS)}")
    return ARMS[arm].flags(plan)


def arm_of(config: dict, plan: ModelPlan) -> str:
    """The name of the arm a run's ``config.yaml`` describes (``-scratch``: no init)."""
    for arm in ARMS.values():
        if all(config.get(k) == v for k, v in arm.config(plan).items()):
            return arm.name + ("" if config.get("init") else "-scratch")
    raise ValueError(f"no arm matches config {config}")


def read_config(run_dir: Path) -> dict:
    import yaml

    return yaml.safe_load((run_dir / "config.yaml").read_text())


def run(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` (printed first), fail loudly, append it and its wall time to ``log``."""
    print("$ " + shlex.join(cmd), flush=True)
    t = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.time() - t
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(json.dumps({"cmd": shlex.join(cmd), "wall_s": round(wall, 1)}) + "\n")
    return wall


def pof_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pof", *args]


def train_run(out: Path, flags: list[str], log: Path) -> Path:
    """Train into ``out`` unless finished; resume if interrupted."""
    if (out / "final.safetensors").is_file():
        print(f"# done already: {out}")
        return out
    resume = ["--resume"] if (out / "last.safetensors").is_file() else []
    run(pof_cmd("train", *flags, "--out", str(out), *resume), log)
    return out


BN_RECAL_BATCHES = 20  # x 128 unaugmented training images, forward passes only
BN_RECAL_SPARSITIES = (0.5, 0.7, 0.9)


def sweep_run(ckpt: Path, data: str, out: Path, log: Path, bn_recal: bool = False) -> None:
    """Sweep ``ckpt`` into ``out`` unless done already (``bn_recal``: separate BN table)."""
    if (out / "sweep.json").is_file():
        return
    sps = BN_RECAL_SPARSITIES if bn_recal else SPARSITIES
    extra = ["--bn-recal", str(BN_RECAL_BATCHES)] if bn_recal else []
    run(pof_cmd("sweep", str(ckpt), "--data", data, "--out", str(out), "--sparsities",
                ",".join(map(str, sps)), *extra), log)


def sweep_both(run_dir: Path, data: str, log: Path, bn_recal: bool) -> None:
    """The main sweep of a finished run, then (if asked) its BatchNorm-recalibrated one."""
    sweep_run(run_dir / "final.safetensors", data, run_dir / "sweep", log)
    if bn_recal:
        sweep_run(run_dir / "final.safetensors", data, run_dir / "sweep-bnrecal", log, True)


def last_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])


def sweep_rows(plan: ModelPlan, out: Path) -> list[dict]:
    """Result rows of one finished, swept run (BatchNorm-recalibrated rows included); the
    arm and seed are read back from the run's config.yaml."""
    cfg = read_config(out)
    arm, seed = arm_of(cfg, plan), cfg["seed"]
    wall = last_metrics(out)["time_s"]
    rows = []
    for name in ("sweep", "sweep-bnrecal"):
        path = out / name / "sweep.json"
        if path.is_file():
            rows += [{"bn_recal": False, **r, "model": plan.model, "arm": arm, "seed": seed,
                      "train_wall_s": wall} for r in json.loads(path.read_text())
                     if name == "sweep" or r["recover"] != "dense"]
    return rows


def ft_row(plan: ModelPlan, ft: Path) -> dict:
    """Result row of one finished fine-tuning run; the arm, seed, sparsity and recovery are
    read back from the pruned checkpoint it started from (its training config and pruning)."""
    from pof.training.checkpoint import read_meta

    src = read_meta(read_config(ft)["init"])
    arm, seed = arm_of(src["config"], plan), src["config"]["seed"]
    s, recover = src["pruned"]["sparsity"], src["pruned"]["recover"]
    m = last_metrics(ft)
    return {"model": plan.model, "arm": f"{arm}+ft", "seed": seed, "sparsity": s,
            "recover": recover, "label": f"{arm}+ft", "top1": m["test_top1"],
            "train_wall_s": m["time_s"]}


def run_plan(plan: ModelPlan, data: str, root: Path, log: Path,
             only: set[str] | None = None) -> None:
    """Train, sweep and fine-tune everything in ``plan`` (finished runs are skipped).

    ``only``: run just these arms (and their fine-tuning; "scratch" for the scratch runs).

    Order: every arm at the first seed, its fine-tuning runs, then the other seeds, then the
    from-scratch runs, so that a stopped profile leaves complete comparisons behind.
    """
    base = ["--model", plan.model, "--data", data, "--batch-size", "128", "--workers", "0",
            "--weight-decay", str(plan.wd), "--ckpt-every", "200", "--progress", "false"]
    mdir = plan_dir(root, plan)
    if plan.model_kwargs:  # not a CLI flag: goes through a tiny recipe file
        recipe = mdir / "model.yaml"
        recipe.parent.mkdir(parents=True, exist_ok=True)
        recipe.write_text(json.dumps({"model_kwargs": plan.model_kwargs}))
        base += ["--config", str(recipe)]
    pre = train_run(mdir / "pretrained", base + ["--epochs", str(plan.pre_epochs), "--lr",
                    str(plan.lr), "--warmup-epochs", "0.5", "--seed", "0"], log)
    cont = ["--epochs", str(plan.arm_epochs), "--lr", str(plan.lr / 2),
            "--init", str(pre / "final.safetensors")]
    main = [(arm, seed) for seed in plan.seeds for arm in plan.arms
            if only is None or arm in only]
    first = [(arm, seed) for arm, seed in main if seed == main[0][1]] if main else []
    for i, (arm, seed) in enumerate(main):
        if i == len(first):
            finetune_runs(plan, main, mdir, data, log)
        out = train_run(mdir / f"{arm}-s{seed}", base + cont + arm_flags(plan, arm) +
                        ["--seed", str(seed)], log)
        sweep_both(out, data, log, seed in plan.bn_recal_seeds)
    if len(first) == len(main):
        finetune_runs(plan, main, mdir, data, log)
    for arm in plan.scratch if only is None or "scratch" in only else ():
        out = train_run(mdir / f"{arm}-scratch-s0", base + [
            "--epochs", str(plan.pre_epochs + plan.arm_epochs), "--lr", str(plan.lr),
            "--warmup-epochs", "0.5", "--seed", "0"] + arm_flags(plan, arm), log)
        sweep_both(out, data, log, False)


def finetune_runs(plan: ModelPlan, main: list[tuple[str, int]], mdir: Path, data: str,
                  log: Path) -> None:
    """Prune standard (zero fill) and pof (mean recovery), fine-tune both, masks fixed."""
    for s in plan.finetune:
        for arm in ("standard", pof_arm(plan, s)):
            recover = FT_RECOVER.get(arm, "mean")
            for seed in [sd for a, sd in main if a == arm and sd in (plan.ft_seeds or (sd,))]:
                src = mdir / f"{arm}-s{seed}"
                pdir = mdir / f"ft{int(s * 100)}-{arm}-s{seed}"
                if not (pdir / "pruned" / "pruned.safetensors").is_file():
                    run(pof_cmd("prune", str(src / "final.safetensors"), "--sparsity", str(s),
                                "--recover", recover, "--out", str(pdir / "pruned")), log)
                ft = pdir / "finetune"
                if not (ft / "final.safetensors").is_file():
                    resume = ["--resume"] if (ft / "last.safetensors").is_file() else []
                    run(pof_cmd("finetune", str(pdir / "pruned" / "pruned.safetensors"),
                                "--epochs", str(plan.ft_epochs), "--lr", str(plan.lr / 10),
                                "--out", str(ft), "--data", data, "--seed", str(seed),
                                "--workers", "0", "--progress", "false", *resume), log)


# ---------------------------------------------------------------- report
def _agg(vals: list[float]) -> str:
    if not vals:
        return ""
    m = 100 * statistics.mean(vals)
    if len(vals) == 1:
        return f"{m:.2f}"
    return f"{m:.2f} ± {100 * (max(vals) - min(vals)) / 2:.2f}"  # ± half the range


def _sweep_table(title: str, pruned: list[dict], dense: list[dict]) -> list[str]:
    """Arm x recovery rows, sparsity columns (mean ± half-range over the seeds in ``pruned``)."""
    sps = sorted({r["sparsity"] for r in pruned if r["recover"] != "dense"})
    head = ["arm", "recovery", "seeds", "dense", *(f"{100 * s:g}%" for s in sps)]
    out = [title, "", "| " + " | ".join(head) + " |",
           "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for arm in dict.fromkeys(r["arm"] for r in pruned):
        seeds = {r["seed"] for r in pruned if r["arm"] == arm}
        d = [r["top1"] for r in dense if r["arm"] == arm and r["seed"] in seeds]
        for rec in ("zero", "mean"):
            cells = [_agg([r["top1"] for r in pruned if r["arm"] == arm and
                           r["recover"] == rec and r["sparsity"] == s]) for s in sps]
            out.append(f"| {arm} | {rec} | {len(seeds)} | {_agg(d)} | " + " | ".join(cells) +
                       " |")
    return out + [""]


def main_rows(rows: list[dict], model: str) -> list[dict]:
    """One-shot rows of ``model``: no fine-tuning, no BatchNorm recalibration."""
    return [r for r in rows if r["model"] == model and not r["arm"].endswith("+ft")
            and not r.get("bn_recal")]


def tables(rows: list[dict]) -> str:
    """Markdown tables per model: one-shot, BatchNorm-recalibrated, fine-tuned."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mrows = main_rows(rows, model)
        dense = [r for r in mrows if r["recover"] == "dense"]
        out += _sweep_table(f"### {model}: top-1 (%) after one-shot pruning, no fine-tuning",
                            mrows, dense)
        bn = [r for r in rows if r["model"] == model and r.get("bn_recal")]
        if bn:
            out += _sweep_table(
                f"### {model}: top-1 (%) after one-shot pruning + BatchNorm recalibration "
                f"({BN_RECAL_BATCHES} x 128 training images, forward passes only)", bn, dense)
        ft = [r for r in rows if r["model"] == model and r["arm"].endswith("+ft")]
        if ft:
            out += [f"### {model}: fine-tuned with fixed masks", "",
                    "| arm | recovery | sparsity | seeds | top-1 before | top-1 after |",
                    "|---|---|---:|---:|---:|---:|"]
            for arm_ft, s, rec in dict.fromkeys((r["arm"], r["sparsity"], r["recover"])
                                                for r in ft):
                arm = arm_ft.removesuffix("+ft")
                after = [r["top1"] for r in ft if (r["arm"], r["sparsity"]) == (arm_ft, s)]
                seeds = {r["seed"] for r in ft if (r["arm"], r["sparsity"]) == (arm_ft, s)}
                before = [r["top1"] for r in mrows if r["seed"] in seeds
                          and (r["arm"], r["recover"], r["sparsity"]) == (arm, rec, s)]
                out.append(f"| {arm} | {rec} | {100 * s:g}% | {len(after)} | {_agg(before)} "
                           f"| {_agg(after)} |")
            out.append("")
    return "\n".join(out)


TARGETS = {0.5: (0.5, 0.3), 0.7: (1.5, 1.0), 0.9: (4.0, 3.0)}  # (vs standard dense, vs own)


def targets_table(rows: list[dict], plan: ModelPlan) -> str:
    """pof at its own target sparsity against the issue's targets (mean over seeds)."""
    model = plan.model

    def top1(arm: str, recover: str, s: float) -> float | None:
        v = [r["top1"] for r in main_rows(rows, model) if r["arm"] == arm
             and r["recover"] == recover and (recover == "dense" or r["sparsity"] == s)]
        return 100 * statistics.mean(v) if v else None

    lines = ["| sparsity | standard dense | pof dense (arm) | pof pruned (mean / zero) | lost vs "
             "standard dense (target) | lost vs pof dense (target) | standard pruned "
             "(zero / mean) |", "|---|---:|---:|---:|---:|---:|---:|"]
    std = top1("standard", "dense", 0)
    for s, (t_std, t_own) in TARGETS.items():
        arm = pof_arm(plan, s)
        dense, mean, zero = (top1(arm, r, s) for r in ("dense", "mean", "zero"))
        if None in (std, dense, mean, zero):
            continue
        sz, sm = top1("standard", "zero", s), top1("standard", "mean", s)
        lines.append(f"| {100 * s:g}% | {std:.2f} | {dense:.2f} ({arm}) | "
                     f"{mean:.2f} / {zero:.2f} | "
                     f"{std - mean:.2f} ({t_std}) | {dense - mean:.2f} ({t_own}) | "
                     f"{sz:.2f} / {sm:.2f} |")
    return "\n".join(lines)


def ft_target(rows: list[dict], plan: ModelPlan, s: float) -> str:
    """Fine-tuned drop vs the standard dense model: pof's should be at most half."""
    model, pof = plan.model, pof_arm(plan, s)

    def mean(vals: list[float]) -> float | None:
        return 100 * statistics.mean(vals) if vals else None

    std = mean([r["top1"] for r in main_rows(rows, model)
                if r["arm"] == "standard" and r["recover"] == "dense"])
    after = {a: mean([r["top1"] for r in rows if r["model"] == model and r["sparsity"] == s
                      and r["arm"] == f"{a}+ft"]) for a in ("standard", pof)}
    if std is None or None in after.values():
        return ""
    drop = {a: std - v for a, v in after.items()}
    conv, ours = drop["standard"], drop[pof]
    verdict = "met" if ours <= conv / 2 else "missed"
    return (f"{model} at {100 * s:g}% after fine-tuning, drop vs the standard dense model "
            f"({std:.2f}): conventional {conv:.2f}, pof {ours:.2f} points (target: pof at "
            f"most half the conventional drop, {conv / 2:.2f}: {verdict}).")


def plots(rows: list[dict], root: Path, results: Path, profile: str) -> list[str]:
    plans = {p.model: p for p in PROFILES[profile]}
    from pof.report import plot_sweep, plot_weight_histograms
    from pof.training.checkpoint import model_from_checkpoint

    made = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mrows = main_rows(rows, model)
        avg: dict[tuple, list[float]] = {}
        for r in mrows:
            avg.setdefault((r["arm"], r["recover"], r["sparsity"]), []).append(r["top1"])
        flat = [{"label": a, "recover": rec, "sparsity": s, "top1": statistics.mean(v)}
                for (a, rec, s), v in avg.items()]
        path = results / f"cifar10_{profile}_{model}_sweep.png"
        plot_sweep(flat, path, title=f"CIFAR-10 {model}: one-shot pruning, no fine-tuning "
                   "(mean over seeds)")
        made.append(path.name)
        mdir = plan_dir(root, plans[model])
        ckpts = {a: mdir / f"{a}-s0" / "final.safetensors"
                 for a in ("standard", pof_arm(plans[model], 0.7))}
        if all(p.is_file() for p in ckpts.values()):
            models = {a: model_from_checkpoint(p)[0] for a, p in ckpts.items()}
            path = results / f"cifar10_{profile}_{model}_weights.png"
            plot_weight_histograms(models, path)
            made.append(path.name)
    return made


def keep_checkpoints(root: Path, results: Path, profile: str) -> list[str]:
    """Model-only copies (no optimizer state) of the headline ResNet-20 pair, seed 0."""
    from pof.training.checkpoint import model_only_copy

    dest = results / "checkpoints"
    kept = []
    plan = PROFILES[profile][0]
    mdir = plan_dir(root, plan)
    for run_dir in (mdir / "standard-s0", mdir / f"{pof_arm(plan, 0.7)}-s0"):
        src = run_dir / "final.safetensors"
        if not src.is_file():
            continue
        name = f"resnet20-{run_dir.name}.safetensors"
        model_only_copy(src, dest / name, "../shared/data/cifar10/cifar10-jpeg.tar.gz")
        kept.append(name)
    return kept


def environment() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, Python {platform.python_version()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    ap.add_argument("--data", default=os.environ.get("POF_CIFAR10"),
                    help="CIFAR-10: a python-pickle dir, an ImageFolder or a .tar.gz of one "
                    "(default: $POF_CIFAR10)")
    ap.add_argument("--out", default=None, help="runs folder (default: runs/cifar10; "
                    "profiles share finished runs)")
    ap.add_argument("--results", default=str(ROOT / "docs" / "results" / "archive"))
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--arms", default=None,
                    help="comma-separated subset of arms to run (their fine-tuning included; "
                    "'scratch' for the from-scratch runs)")
    ap.add_argument("--models", default=None,
                    help="comma-separated subset of the profile's models to run (the report "
                    "always covers every finished run of the profile)")
    args = ap.parse_args()
    if not args.data or not Path(args.data).exists():
        sys.exit(f"CIFAR-10 not found at {args.data!r}: pass --data or set $POF_CIFAR10")
    root = Path(args.out or ROOT / "runs" / "cifar10")
    results = Path(args.results)
    print("command:", shlex.join([sys.executable, *sys.argv]), flush=True)
    log_path = root / "commands.jsonl"
    t0 = time.time()
    plans = PROFILES[args.profile]
    wanted = args.models.split(",") if args.models else [p.model for p in plans]
    if unknown := set(wanted) - {p.model for p in plans}:
        sys.exit(f"profile {args.profile} has no model {', '.join(sorted(unknown))}")
    if not args.report_only:
        for plan in plans:
            if plan.model in wanted:
                run_plan(plan, args.data, root, log_path,
                         set(args.arms.split(",")) if args.arms else None)
    rows = [row for plan in plans for row in collect(plan, root)]
    results.mkdir(parents=True, exist_ok=True)
    (results / f"cifar10_{args.profile}.json").write_text(json.dumps(rows, indent=1))
    fts = [ft_target(rows, p, s) for p in plans for s in p.finetune]
    text = tables(rows) + "\n### Against the targets (pof at its own target sparsity)\n\n" + \
        targets_table(rows, plans[0]) + "\n\n" + "\n\n".join(f for f in fts if f) + "\n"
    figs = plots(rows, root, results, args.profile)
    kept = keep_checkpoints(root, results, args.profile)
    summary = [f"<!-- generated by: {shlex.join(['python', *sys.argv])} -->",
               f"Profile `{args.profile}`; hardware: {environment()}.", "", text,
               "Plots: " + ", ".join(figs), "", "Checkpoints kept: " + ", ".join(kept), "",
               f"This invocation's wall time: {time.time() - t0:.0f} s (runs already done "
               "were skipped). Commands and wall times of every run: "
               f"`{log_path.relative_to(ROOT) if log_path.is_relative_to(ROOT) else log_path}`."]
    (results / f"cifar10_{args.profile}.md").write_text("\n".join(summary) + "\n")
    print(text)
    print(f"wrote {results / f'cifar10_{args.profile}.md'}")


def collect(plan: ModelPlan, root: Path) -> list[dict]:
    """Result rows of the finished runs of ``plan`` (runs still going are left out)."""
    rows = []
    mdir = plan_dir(root, plan)
    for run_dir in sorted(mdir.glob("*-s*")):
        if run_dir.name.startswith("ft") or not (run_dir / "sweep" / "sweep.json").is_file():
            continue
        rows += sweep_rows(plan, run_dir)
    for ft in sorted(mdir.glob("ft*/finetune")):
        if (ft / "final.safetensors").is_file():  # else still running
            rows.append(ft_row(plan, ft))
    return rows


if __name__ == "__main__":
    main()
