"""CIFAR-10 reproduction: pof vs conventional pruning with an equal training budget.

Runs the protocol of docs/results/cifar10.md through the real ``pof`` CLI, printing every
command before it runs it, then writes the tables and plots:

    python bench/cifar10.py --profile quick     # ResNet-20, 1 seed, short schedule (<=45 min)
    python bench/cifar10.py --profile medium    # + L1, pof50/90, a 2nd seed, fine-tuning
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
continues with ``--resume``; kill the script at any time and start it again.
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
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10" / "cifar10-jpeg.tar.gz"
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
    model_kwargs: dict = field(default_factory=dict)
    lr: float = 0.1
    wd: float = 5e-4


PROFILES: dict[str, list[ModelPlan]] = {
    "quick": [ModelPlan("resnet20", pre_epochs=5, arm_epochs=3, arms=("standard", "pof70"),
                        seeds=(0,))],
    "tuning": [ModelPlan("resnet20", pre_epochs=5, arm_epochs=3, arms=("pof70w5", "pof70"),
                         seeds=(0,))],
    # quick's runs plus every arm, a second seed for the main pair, fine-tuning at 70% (~80 min)
    "medium": [ModelPlan("resnet20", pre_epochs=5, arm_epochs=3,
                         arms=("standard", "pof70", "pof90", "pof50", "l1"), seeds=(0,),
                         extra=(("standard", 1), ("pof70", 1)), finetune=(0.7,),
                         ft_epochs=1, ft_seeds=(0,))],
    "full": [
        ModelPlan("resnet20", pre_epochs=15, arm_epochs=8,
                  arms=("standard", "l1", "pof50", "pof70", "pof90"), seeds=(0, 1),
                  scratch=("pof70",), finetune=(0.7, 0.9), ft_epochs=2),
        ModelPlan("resnet56", pre_epochs=8, arm_epochs=4, arms=("standard", "pof70"),
                  seeds=(0,)),
        ModelPlan("mobilenet_v2_cifar", pre_epochs=8, arm_epochs=4, arms=("standard", "pof70"),
                  seeds=(0,), finetune=(0.7,), ft_epochs=2, model_kwargs={"width_mult": 0.5},
                  lr=0.05, wd=4e-5),
    ],
}

POF_WEIGHT = 20  # chosen over 5 on the quick profile (docs/results/cifar10.md, "Tuning")


def _pof(s: float, weight: float = POF_WEIGHT) -> list[str]:
    return ["--penalty", "pof", "--sparsity", str(s), "--penalty-weight", str(weight),
            "--penalty-warmup", "0.5", "--penalty-refresh", "50"]


FT_RECOVER = {"standard": "zero"}  # conventional pruning; pof arms use mean recovery


def plan_dir(root: Path, plan: ModelPlan) -> Path:
    """Runs of one model and schedule: profiles with the same schedule share finished runs."""
    return root / f"{plan.model}-e{plan.pre_epochs:g}+{plan.arm_epochs:g}"


ARM_FLAGS = {
    "standard": ["--penalty", "none"],
    "l1": ["--penalty", "l1", "--l1-weight", "5e-5"],
    **{f"pof{int(s * 100)}": _pof(s) for s in (0.5, 0.7, 0.9)},
    "pof70w5": _pof(0.7, 5),  # the first, weaker setting, kept for the tuning note
}


def run(cmd: list[str], log: list[dict]) -> float:
    """Run ``cmd`` (printed first), fail loudly, return its wall time."""
    print("$ " + shlex.join(cmd), flush=True)
    t = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.time() - t
    log.append({"cmd": shlex.join(cmd), "wall_s": round(wall, 1)})
    return wall


def pof_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pof", *args]


def train_run(out: Path, flags: list[str], log: list[dict]) -> Path:
    """Train into ``out`` unless finished; resume if interrupted."""
    if (out / "final.safetensors").is_file():
        print(f"# done already: {out}")
        return out
    resume = ["--resume"] if (out / "last.safetensors").is_file() else []
    run(pof_cmd("train", *flags, "--out", str(out), *resume), log)
    return out


def sweep_run(ckpt: Path, data: str, out: Path, log: list[dict]) -> None:
    """Sweep ``ckpt`` into ``out`` unless done already."""
    if not (out / "sweep.json").is_file():
        run(pof_cmd("sweep", str(ckpt), "--data", data, "--out", str(out), "--sparsities",
                    ",".join(map(str, SPARSITIES))), log)


def last_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])


def sweep_rows(plan: ModelPlan, arm: str, seed: int, out: Path) -> list[dict]:
    """Result rows of one finished, swept run."""
    wall = last_metrics(out)["time_s"]
    return [{**r, "model": plan.model, "arm": arm, "seed": seed, "train_wall_s": wall}
            for r in json.loads((out / "sweep" / "sweep.json").read_text())]


def ft_row(plan: ModelPlan, arm: str, seed: int, s: float, recover: str, ft: Path) -> dict:
    """Result row of one finished fine-tuning run."""
    m = last_metrics(ft)
    return {"model": plan.model, "arm": f"{arm}+ft", "seed": seed, "sparsity": s,
            "recover": recover, "label": f"{arm}+ft", "top1": m["test_top1"],
            "train_wall_s": m["time_s"]}


def run_plan(plan: ModelPlan, data: str, root: Path, log: list[dict]) -> list[dict]:
    """Train, sweep and fine-tune everything in ``plan``; return result rows."""
    base = ["--model", plan.model, "--data", data, "--batch-size", "128", "--workers", "0",
            "--weight-decay", str(plan.wd), "--ckpt-every", "200", "--progress", "false"]
    if plan.model_kwargs:  # not a CLI flag: goes through a tiny recipe file
        recipe = plan_dir(root, plan) / "model.yaml"
        recipe.parent.mkdir(parents=True, exist_ok=True)
        recipe.write_text(json.dumps({"model_kwargs": plan.model_kwargs}))
        base += ["--config", str(recipe)]
    mdir = plan_dir(root, plan)
    pre = train_run(mdir / "pretrained", base + ["--epochs", str(plan.pre_epochs), "--lr",
                    str(plan.lr), "--warmup-epochs", "0.5", "--seed", "0"], log)
    rows: list[dict] = []
    cont = ["--epochs", str(plan.arm_epochs), "--lr", str(plan.lr / 2),
            "--init", str(pre / "final.safetensors")]
    main = [(arm, seed) for arm in plan.arms for seed in plan.seeds]
    runs = [(arm, seed, mdir / f"{arm}-s{seed}", cont + ARM_FLAGS[arm] + ["--seed", str(seed)])
            for arm, seed in main + list(plan.extra)]
    runs += [(f"{arm}-scratch", 0, mdir / f"{arm}-scratch-s0",
              ["--epochs", str(plan.pre_epochs + plan.arm_epochs), "--lr", str(plan.lr),
               "--warmup-epochs", "0.5", "--seed", "0"] + ARM_FLAGS[arm])
             for arm in plan.scratch]
    for i, (arm, seed, out, flags) in enumerate(runs):
        if i == len(main):  # fine-tune the main runs before extra seeds and scratch runs
            rows += finetune_runs(plan, main, mdir, data, log)
        train_run(out, base + flags, log)
        sweep_run(out / "final.safetensors", data, out / "sweep", log)
        rows += sweep_rows(plan, arm, seed, out)
    if len(runs) == len(main):
        rows += finetune_runs(plan, main, mdir, data, log)
    return rows


def finetune_runs(plan: ModelPlan, main: list[tuple[str, int]], mdir: Path, data: str,
                  log: list[dict]) -> list[dict]:
    """Prune standard (zero fill) and pof (mean recovery), fine-tune both, masks fixed."""
    rows = []
    for s in plan.finetune:
        for arm in ("standard", f"pof{int(s * 100)}"):
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
                rows.append(ft_row(plan, arm, seed, s, recover, ft))
    return rows


# ---------------------------------------------------------------- report
def _agg(vals: list[float]) -> str:
    if not vals:
        return ""
    m = 100 * statistics.mean(vals)
    if len(vals) == 1:
        return f"{m:.2f}"
    return f"{m:.2f} ± {100 * statistics.stdev(vals):.2f}"


def tables(rows: list[dict]) -> str:
    """Markdown tables: per model, arm × recovery rows, sparsity columns (mean ± std)."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mrows = [r for r in rows if r["model"] == model and not r["arm"].endswith("+ft")]
        sps = sorted({r["sparsity"] for r in mrows if r["recover"] != "dense"})
        head = ["arm", "recovery", "seeds", "dense", *(f"{100 * s:g}%" for s in sps)]
        out += [f"### {model}: top-1 (%) after one-shot pruning, no fine-tuning", "",
                "| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
        for arm in dict.fromkeys(r["arm"] for r in mrows):
            dense = [r["top1"] for r in mrows if r["arm"] == arm and r["recover"] == "dense"]
            for rec in ("zero", "mean"):
                cells = [_agg([r["top1"] for r in mrows if r["arm"] == arm and
                               r["recover"] == rec and r["sparsity"] == s]) for s in sps]
                seeds = len({r["seed"] for r in mrows if r["arm"] == arm})
                out.append(f"| {arm} | {rec} | {seeds} | {_agg(dense)} | " +
                           " | ".join(cells) + " |")
        out.append("")
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


def targets_table(rows: list[dict], model: str = "resnet20") -> str:
    """pof at its own target sparsity against the issue's targets (mean over seeds)."""

    def top1(arm: str, recover: str, s: float) -> float | None:
        v = [r["top1"] for r in rows if r["model"] == model and r["arm"] == arm
             and r["recover"] == recover and (recover == "dense" or r["sparsity"] == s)]
        return 100 * statistics.mean(v) if v else None

    lines = ["| sparsity | standard dense | pof dense | pof pruned (mean / zero) | lost vs "
             "standard dense (target) | lost vs pof dense (target) | standard pruned "
             "(zero / mean) |", "|---|---:|---:|---:|---:|---:|---:|"]
    std = top1("standard", "dense", 0)
    for s, (t_std, t_own) in TARGETS.items():
        arm = f"pof{int(100 * s)}"
        dense, mean, zero = (top1(arm, r, s) for r in ("dense", "mean", "zero"))
        if None in (std, dense, mean, zero):
            continue
        sz, sm = top1("standard", "zero", s), top1("standard", "mean", s)
        lines.append(f"| {100 * s:g}% | {std:.2f} | {dense:.2f} | {mean:.2f} / {zero:.2f} | "
                     f"{std - mean:.2f} ({t_std}) | {dense - mean:.2f} ({t_own}) | "
                     f"{sz:.2f} / {sm:.2f} |")
    return "\n".join(lines)


def plots(rows: list[dict], root: Path, results: Path, profile: str) -> list[str]:
    dirs = {p.model: plan_dir(root, p) for p in PROFILES[profile]}
    from pof.checkpoint import model_from_checkpoint
    from pof.report import plot_sweep, plot_weight_histograms

    made = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mrows = [r for r in rows if r["model"] == model and not r["arm"].endswith("+ft")]
        avg: dict[tuple, list[float]] = {}
        for r in mrows:
            avg.setdefault((r["arm"], r["recover"], r["sparsity"]), []).append(r["top1"])
        flat = [{"label": a, "recover": rec, "sparsity": s, "top1": statistics.mean(v)}
                for (a, rec, s), v in avg.items()]
        path = results / f"cifar10_{profile}_{model}_sweep.png"
        plot_sweep(flat, path, title=f"CIFAR-10 {model}: one-shot pruning, no fine-tuning "
                   "(mean over seeds)")
        made.append(path.name)
        ckpts = {a: dirs[model] / f"{a}-s0" / "final.safetensors" for a in ("standard", "pof70")}
        if all(p.is_file() for p in ckpts.values()):
            models = {a: model_from_checkpoint(p)[0] for a, p in ckpts.items()}
            path = results / f"cifar10_{profile}_{model}_weights.png"
            plot_weight_histograms(models, path)
            made.append(path.name)
    return made


def keep_checkpoints(root: Path, results: Path, profile: str) -> list[str]:
    """Model-only copies (no optimizer state) of the headline ResNet-20 pair, seed 0."""
    from pof.checkpoint import model_from_checkpoint, save_checkpoint

    dest = results / "checkpoints"
    kept = []
    mdir = plan_dir(root, PROFILES[profile][0])
    for run_dir in (mdir / "standard-s0", mdir / "pof70-s0"):
        src = run_dir / "final.safetensors"
        if not src.is_file():
            continue
        model, meta = model_from_checkpoint(src)
        meta = {k: meta[k] for k in ("arch", "data", "config", "step", "epoch") if k in meta}
        meta["data"]["source"] = "../shared/data/cifar10/cifar10-jpeg.tar.gz"
        name = f"resnet20-{run_dir.name}.safetensors"
        save_checkpoint(dest / name, model, meta)
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
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--out", default=None, help="runs folder (default: runs/cifar10; "
                    "profiles share finished runs)")
    ap.add_argument("--results", default=str(ROOT / "docs" / "results"))
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    if not Path(args.data).exists():
        sys.exit(f"CIFAR-10 not found at {args.data} (see ../shared/data/cifar10/README.md)")
    root = Path(args.out or ROOT / "runs" / "cifar10")
    results = Path(args.results)
    print("command:", shlex.join([sys.executable, *sys.argv]), flush=True)
    log_path = root / "commands.jsonl"
    log: list[dict] = []
    t0 = time.time()
    rows: list[dict] = []
    for plan in PROFILES[args.profile]:
        if args.report_only:
            rows += collect(plan, root)
        else:
            rows += run_plan(plan, args.data, root, log)
    root.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as f:
        for entry in log:
            f.write(json.dumps(entry) + "\n")
    results.mkdir(parents=True, exist_ok=True)
    (results / f"cifar10_{args.profile}.json").write_text(json.dumps(rows, indent=1))
    text = tables(rows) + "\n### Against the targets (pof at its own target sparsity)\n\n" + \
        targets_table(rows) + "\n"
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
    """Result rows from finished runs only (for --report-only)."""
    rows = []
    mdir = plan_dir(root, plan)
    for run_dir in sorted(mdir.glob("*-s*")):
        sw = run_dir / "sweep" / "sweep.json"
        if run_dir.name.startswith("ft") or not sw.is_file():
            continue
        arm, seed = run_dir.name.rsplit("-s", 1)
        rows += sweep_rows(plan, arm, int(seed), run_dir)
    for ft in sorted(mdir.glob("ft*/finetune")):
        pct, rest = ft.parent.name[2:].split("-", 1)  # ft70-standard-s0
        arm, seed = rest.rsplit("-s", 1)
        recover = FT_RECOVER.get(arm, "mean")
        rows.append(ft_row(plan, arm, int(seed), int(pct) / 100, recover, ft))
    return rows


if __name__ == "__main__":
    main()
