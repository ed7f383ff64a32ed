"""Evidence at scale: converged models, ResNet-20/56 and MobileNetV2, several seeds, one GPU.

One prepared script for a GPU machine (it runs on CPU too, for days). Every step is
skipped when its output exists and killed trainings resume, so it can be stopped and
started again. The three models go side by side, each model's runs ``--jobs`` at a time
(several CIFAR runs share one GPU; up to 3 × jobs runs at once), each after its own
pretrain:

1. converged standard models: ResNet-56 and MobileNetV2-CIFAR from
   recipes/cifar10_{resnet56,mobilenet_v2_cifar}_standard.yaml (ResNet-20's is in
   ../shared/pretrained);
2. the on-the-fly protocol (bench/on_the_fly.py: standard + one-shot with and without
   BatchNorm re-estimation, GMP, dedicated pof, pof range, CrAM-style; equal budget;
   sweeps at 0/30/50/70/80/90%; arms: PROTOCOL): ResNet-20 seeds 0-2, ResNet-56 seed 0;
3. MobileNetV2-CIFAR at 70%, first conv dense, with fine-tuning (the paper's claim):
   conventional = one-shot magnitude pruning of the standard model, then F epochs of
   fine-tuning with fixed masks; GMP = B epochs of GMP to 70% from the standard model,
   then the same F epochs; pof = B epochs of pof for 70%, one-shot prune with mean
   recovery, then the same F epochs. Drop = standard dense top-1 minus the final top-1.

    python bench/at_scale.py --device cuda --jobs 6
    python bench/at_scale.py --steps mbv2 --seeds 0 --device cpu     # one part only

Results: docs/results/on_the_fly*.md (step 2, via bench/on_the_fly.py) and
docs/results/mobilenet_v2_70.md (step 3), each with its commands and wall times;
``--report-only`` builds docs/results/cifar10.md from them and puts ResNet-20's table into
the README. A CUDA run trains with bf16 autocast, a CPU run in fp32: the pages name the
machine of each run, and seeds from the two should not be averaged unremarked.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import on_the_fly as otf
from runner import (
    DATA,
    PRETRAINED,
    ROOT,
    append_new,
    flags,
    inject,
    last_top1,
    out_of,
    pof,
    ran,
    run,
    shown,
    train_once,
)

from pof.core.penalty import default_form_weight

STEPS = ("pretrain", "on_the_fly", "mbv2")
DOCS = (ROOT / "docs" / "results").resolve()


def width_tag(model: str, args: argparse.Namespace) -> str:
    """``-w0.5`` for a MobileNetV2 of reduced width (``--mbv2-width``), else nothing."""
    return f"-w{args.mbv2_width:g}" if model.startswith("mobilenet") and \
        args.mbv2_width != 1 else ""


def width_config(model: str, args: argparse.Namespace, recipe: Path | None = None) -> list[str]:
    """``--config`` flags that give a reduced-width MobileNetV2 its width (the recipe's
    values, if one is given, plus ``model_kwargs``); none at full width."""
    tag = width_tag(model, args)
    if not tag:
        return ["--config", str(recipe)] if recipe else []
    import yaml

    cfg = yaml.safe_load(recipe.read_text()) if recipe else {"model": model}
    cfg["model_kwargs"] = {**cfg.get("model_kwargs", {}), "width_mult": args.mbv2_width}
    path = args.out / f"{model}{tag}-{recipe.stem if recipe else 'arm'}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return ["--config", str(path)]


def pretrain(model: str, args: argparse.Namespace, log: Path) -> Path:
    recipe = ROOT / "recipes" / f"cifar10_{model}_standard.yaml"
    return train_once(pof("train", *width_config(model, args, recipe), "--data",
                          str(args.data), "--epochs", f"{args.pretrain_epochs:g}", "--device",
                          args.device, "--progress", "false"),
                      args.out / f"{model}{width_tag(model, args)}-standard", log)


def finetune(pruned: Path, out: Path, args: argparse.Namespace, log: Path, seed: int) -> None:
    train_once(pof("finetune", str(pruned), "--data", str(args.data), "--epochs",
                   f"{args.ft_epochs:g}", "--lr", f"{args.ft_lr:g}", "--seed", str(seed),
                   "--device", args.device, "--progress", "false"), out, log)


def prune(ckpt: Path, out: Path, recover: str, args: argparse.Namespace, log: Path) -> Path:
    if not (out / "pruned.safetensors").is_file():
        run(pof("prune", str(ckpt), "--sparsity", "0.7", "--recover", recover, "--device",
                args.device, "--data", str(args.data), "--out", str(out)), log)
    return out / "pruned.safetensors"


def mbv2_arm(arm: str, seed: int, std: Path, args: argparse.Namespace, log: Path) -> None:
    """One MobileNetV2 arm at 70% for one seed, fine-tuning included (:func:`mbv2_page`
    reports it from the archive)."""
    model = "mobilenet_v2_cifar"
    d = args.out / f"mbv2{width_tag(model, args)}" / f"{arm}-s{seed}"
    common = (*width_config(model, args), "--model", model, "--data", str(args.data),
              "--init", str(std),
              "--epochs", f"{args.epochs:g}", "--lr", "0.05", "--weight-decay", "4e-5",
              "--schedule", "cosine", "--seed", str(seed), "--device", args.device,
              "--progress", "false")
    if arm == "conventional":
        pruned = prune(std, d / "pruned", "zero", args, log)
    elif arm == "gmp":
        pruned = train_once(pof("train", *common, *flags(otf.arm_options("gmp70"))),
                            d / "train", log)
    else:  # the ResNet-20 arm's settings, but weight 100: the penalty is a mean over layers
        # and MobileNetV2's 52 kept 6.7% of the pruned energy at 20 (docs/method.md, 2)
        final = train_once(pof("train", *common, *flags(otf.arm_options("pof70")),
                               "--penalty-weight", "100"), d / "train", log)
        pruned = prune(final, d / "pruned", "mean", args, log)
    finetune(pruned, d / "ft", args, log, seed)


def mbv2_page(args: argparse.Namespace) -> str | None:
    """docs/results/mobilenet_v2_70.md from the archived MobileNetV2 runs (at_scale/mbv2*/):
    top-1 after fine-tuning per arm and seed, each run's device from the commands log."""
    model = "mobilenet_v2_cifar"
    args = argparse.Namespace(**{"mbv2_width": 1.0, **vars(args)})  # on_the_fly.py's has none
    tag = width_tag(model, args)
    dest = args.docs / "at_scale"
    std, base = dest / f"{model}{tag}-standard", dest / f"mbv2{tag}"
    runs = sorted(p.parent.parent for p in base.glob("*-s*/ft/metrics.jsonl")
                  if p.read_text().strip())
    if not runs or not (std / "metrics.jsonl").is_file():
        return None
    dense = last_top1(std)
    import yaml  # the budgets as run, from the archived configs

    budget = {}  # e.g. only conventional runs archived: no training budget to show
    for part in ("train", "ft"):
        cfg = next(base.glob(f"*-s*/{part}/config.yaml"), None)
        budget[part] = f"{yaml.safe_load(cfg.read_text())['epochs']:g}" if cfg else "?"
    log = dest / "commands.jsonl"
    cmds = [json.loads(x)["cmd"] for x in log.read_text().splitlines()] if log.is_file() else []
    rows, where = [], {}
    for d in runs:
        arm, seed = d.name.rsplit("-s", 1)
        trained = last_top1(d / "train") if (d / "train" / "metrics.jsonl").is_file() else None
        rows.append({"arm": arm, "seed": int(seed), "top1": last_top1(d / "ft"),
                     "trained": trained})
        ft = [c for c in cmds if " -m pof finetune " in c
              and out_of(c).parts[-3:-1] == (base.name, d.name)]
        device = "cuda" if any("--device cuda" in c for c in ft) else "cpu" if ft else "?"
        where.setdefault(device, []).append(d.name)
    oneshot = dest / f"mbv2{tag}-oneshot" / "sweep.json"  # conventional before fine-tuning
    before = next((100 * r["top1"] for r in json.loads(oneshot.read_text())
                   if round(r["sparsity"], 2) == 0.7), None) if oneshot.is_file() else None
    lines = ["| arm | top-1 after fine-tuning | drop vs standard dense | top-1 before "
             "fine-tuning |", "|---|---:|---:|---:|"]
    drops = {}
    for arm in ("conventional", "gmp", "pof"):
        mine = [r for r in rows if r["arm"] == arm]
        if not mine:
            continue
        v = [r["top1"] for r in mine]
        drops[arm] = dense - statistics.mean(v)
        t = [r["trained"] for r in mine if r["trained"] is not None]
        if t:
            pre = f"{statistics.mean(t):.2f} ({', '.join(f'{x:.2f}' for x in t)})"
        elif arm == "conventional" and before is not None:
            pre = f"{before:.2f} (one-shot + BN re-estimation, no training)"
        else:
            pre = "–"
        lines.append(f"| {arm} | {statistics.mean(v):.2f} (seeds: "
                     f"{', '.join(f'{x:.2f}' for x in v)}) | {drops[arm]:.2f} | {pre} |")
    target = ""
    if "pof" in drops and "conventional" in drops:
        conv = drops["conventional"]
        best, best_arm = min((d, a) for a, d in drops.items() if a != "pof")
        target = (f"Target (the paper's claim: pof's drop at most half of conventional "
                  f"pruning's): pof {drops['pof']:.2f} vs conventional {conv:.2f} / 2 = "
                  f"{conv / 2:.2f}: {'met' if drops['pof'] <= conv / 2 else 'missed'}; "
                  f"against the best other arm, {best_arm} ({best:.2f} / 2 = {best / 2:.2f}): "
                  f"{'met' if drops['pof'] <= best / 2 else 'missed'}.")
    width = (f" at width {args.mbv2_width:g} (`--mbv2-width {args.mbv2_width:g}`: channels "
             f"× {args.mbv2_width:g}, to fit a CPU)" if tag else "")
    devices = "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(where.items()))
    text = "\n".join([
        "# MobileNetV2-CIFAR at 70% with fine-tuning (generated)", "",
        f"Generated by `python bench/at_scale.py --report-only` from the archived runs "
        f"(at_scale/{base.name}/){width}; B = {budget['train']} training epochs (GMP, pof) and "
        f"F = {budget['ft']} fine-tuning epochs (every arm; conventional = one-shot "
        f"magnitude pruning of the dense model, then F), standard dense {dense:.2f}%. "
        f"Devices ({devices}) and wall times: [at_scale/commands.jsonl]"
        "(at_scale/commands.jsonl). Before fine-tuning: GMP's and pof's trained models at the "
        "end of their B epochs (GMP's already 70% sparse; pof's dense, the energy of its "
        "pruned set in its metrics.jsonl as pruned_energy); conventional's, the dense model "
        f"pruned one-shot (zero fill) with BatchNorm re-estimation (at_scale/{oneshot.parent.name}"
        "/sweep.json, `pof sweep runs/at_scale/mobilenet_v2_cifar-standard/final.safetensors "
        "--sparsities 0.7 --bn-recal 20 --recover zero`).", "",
        *lines, "", target, ""])
    (args.docs / "mobilenet_v2_70.md").write_text(text)
    return text


# ---------------------------------------------------------------- publish
COLUMNS = (0.0, 0.5, 0.7, 0.8, 0.9)
# (label, arm, the lowest column it is shown at: a dedicated model is s-sparse below s)
HEADLINE = (("standard, one-shot + BN re-estimation", "standard", 0.0),
            *((f"{'GMP to' if a.startswith('gmp') else 'pof for'} {a[3:]}% "
               f"({'an' if a[3] == '8' else 'a'} {a[3:]}%-sparse model)", a, int(a[3:]) / 100)
              for a in sorted(otf.DEDICATED, key=lambda a: (int(a[3:]), a.startswith("pof")))),
            ("pof, one model for 30–90%", "pof-range", 0.0),
            ("CrAM-style, one model for 30–90% (2× step cost; zero fill)", "cram", 0.0),
            ("pof, one model, distilled in place (weight 1)", "pof-range-kd", 0.0),
            ("pof, one model, distilled half (weight 0.5)", "pof-range-kd05", 0.0),
            ("pof, one model, distilled from the starting model", "pof-range-kdinit", 0.0),
            ("pof, one model, 4× budget (16 epochs)", "pof-range-4x", 0.0),
            ("pof, one model, distilled from the starting model, 4× budget",
             "pof-range-kdinit-4x", 0.0),
            ("GMP to 70%, 4× budget", "gmp70-4x", 0.7),
            ("GMP to 90%, 4× budget", "gmp90-4x", 0.9))


def headline(rows: list[dict]) -> list[str]:
    """Arms × sparsities as deployed, the best mean of each column in bold."""
    means = {(arm, c): otf.mean_at(rows, arm, c) for _, arm, low in HEADLINE
             for c in COLUMNS if c >= low and not arm.endswith("x")}  # bold: same budget
    best = {c: max((v for (_, cc), v in means.items() if cc == c and v is not None),
                   default=None) for c in COLUMNS}
    lines = ["| arm (4 epochs unless said) | dense | 50% | 70% | 80% | 90% |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, arm, low in HEADLINE:
        if not any(r["arm"] == arm for r in rows):
            continue
        cells = []
        for c in COLUMNS:
            text = otf.cell(otf.deploy_cell(rows, arm, c)) if c >= low else "–"
            cells.append(f"**{text}**" if means.get((arm, c)) == best[c] and text != "–"
                         else text)
        n = len({r["seed"] for r in rows if r["arm"] == arm})
        seeds = " [1 seed]" if n == 1 else ""  # no spread measured
        lines.append(f"| {label}{seeds} | " + " | ".join(cells) + " |")
    return lines


def logged(log: Path, runs: set[tuple[str, int]]) -> list[dict]:
    """The lines of a commands.jsonl that ran one of ``runs`` (arm, seed)."""
    lines = [json.loads(x) for x in log.read_text().splitlines()] if log.is_file() else []
    return [r for r in lines if any(ran(r["cmd"], f"{a}-s{n}") for a, n in runs)]


# runs logged before commands.jsonl named the machine ran on the development machine
EARLY_HOST, EARLY_TORCH = "AMD EPYC, 2 cores", "2.13.0+cpu"


def cost_line(rows: list[dict], name: str) -> str:
    """Wall hours of trainings and sweeps, and the machines that ran them."""
    if not rows:
        return f"No commands log archived in {name}/commands.jsonl: wall times unknown."
    hours = {kind: sum(r["wall_s"] for r in rows if f" -m pof {kind} " in r["cmd"]) / 3600
             for kind in ("train", "sweep")}
    hosts = sorted({r.get("host", EARLY_HOST) for r in rows})
    torch_v = sorted({r.get("torch", EARLY_TORCH) for r in rows})
    threads = sorted({str(r.get("threads") or "1") for r in rows})
    noted = sum("note" in r for r in rows)
    devices = {"cuda" if "--device cuda" in r["cmd"] or "+cu" in r.get("torch", "") else "cpu"
               for r in rows}
    mixed = (" Some runs ran on a GPU, others on a CPU (a CUDA run trains with bf16 autocast, "
             "a CPU run in fp32; which is which is in the log): spreads and gaps include that."
             if len(devices) > 1 else "")
    return (f"Logged wall time of the runs above: {hours['train']:.1f} h of training and "
            f"{hours['sweep']:.1f} h of sweeps ({name}/commands.jsonl has every command with "
            "its wall time; a training cut by a stop counts only its logged segments"
            + (f", {noted} of them entered by hand with a note" if noted else "")
            + f") on {'; '.join(hosts)}{' (no GPU)' if devices == {'cpu'} else ''}, "
            f"torch {', '.join(torch_v)}, "
            f"{'/'.join(threads)} thread(s) per run, several runs at a time: wall times do "
            "not compare arms (bench/step_cost.py does)." + mixed)


def model_section(model: str, args: argparse.Namespace) -> list[str]:
    """The headline table, targets, commands and cost of one model's on-the-fly runs."""
    init = (os.path.relpath(PRETRAINED, ROOT) if model == "resnet20"
            else f"runs/at_scale/{model}-standard/final.safetensors")
    ns = argparse.Namespace(model=model, docs=args.docs, init=init,
                            data=os.path.relpath(DATA, ROOT), device=None)
    name = otf.results_name(ns)
    rows = otf.rows_of(ns)
    if not rows:
        pretrained = (args.docs / "at_scale" / f"{model}-standard").is_dir()
        return [f"## {model}", "", ("No arm has finished yet (the standard model is above): "
                                    if pretrained else "Not run yet: ")
                + "`python bench/at_scale.py` (see its docstring) runs it; finished arms "
                f"land in {otf.results_name(ns)}/.", ""]
    import yaml  # the budget as run, from an archived run's config

    run = yaml.safe_load(next((args.docs / name).glob("*-s*/config.yaml")).read_text())
    ns.epochs, ns.lr = run["epochs"], run["lr"]
    one, rng = default_form_weight(0.5), default_form_weight((0.3, 0.9))
    seeds = sorted({r["seed"] for r in rows})
    lines = headline(rows)
    shown_arms = {arm for _, arm, _ in HEADLINE}
    cost = cost_line(logged(args.docs / name / "commands.jsonl",
                            {(r["arm"], r["seed"]) for r in rows if r["arm"] in shown_arms}),
                     name)
    opts = otf.common(ns, 0)
    del opts["seed"]
    run_dir = Path("runs") / name / "ARM-sN"
    sweep = shown(otf.sweep_command(run_dir / "final.safetensors", run_dir / "sweep-bn",
                                        "sweep-bn", ns))
    cmds = [f"Each run, from the project root: `pof train COMMON --seed N OPTIONS --out "
            f"{run_dir}`, then `{sweep}` (and the same without `--bn-recal` into `sweep/`), "
            f"with COMMON = `{shlex.join(flags(opts))}` and OPTIONS:", "",
            "| arm | OPTIONS |", "|---|---|"]
    cmds += [f"| {arm} | `{shlex.join(flags(otf.arm_options(arm)))}` |"
             for _, arm, _ in HEADLINE if any(r["arm"] == arm for r in rows)]
    return [f"## {model}", "",
            f"Seeds run: {', '.join(map(str, seeds))}. Test top-1 %, "
            + ("mean ± half-range over the seeds each arm has run (the per-arm seed count and "
               if len(seeds) > 1 else "one seed per arm (")
            + f"every sweep row: [{name}_tables.md]({name}_tables.md)). Every arm continues "
            f"from the same converged standard model for the same {ns.epochs:g} epochs; as "
            f"deployed: {otf.DEPLOYED}. pof runs take the library's default penalty "
            f"({one[0]} at weight {one[1]:g} for one target, {rng[0]} at {rng[1]:g} for a "
            "range; each run's "
            "config.yaml records it). Sparsity is over the pruned layers (every conv and the "
            "classifier but the first conv).", "",
            *lines, "", f"Targets ({otf.targets_note(rows)}):", "", *otf.targets(rows), "",
cost, "", *cmds, ""]


ARCHIVE = ("config.yaml", "metrics.jsonl")


def archive_runs(args: argparse.Namespace) -> Path:
    """Copy the small files of every finished run under ``--out`` (the pretrains, the
    MobileNetV2 arms) and its commands log into docs/results/at_scale/; no checkpoints."""
    dest = args.docs / "at_scale"
    if args.out.is_dir():
        for m in sorted(args.out.rglob("metrics.jsonl")):
            if (m.parent / "final.safetensors").is_file():
                for f in ARCHIVE:
                    if (m.parent / f).is_file():
                        target = dest / m.parent.relative_to(args.out) / f
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(m.parent / f, target)
        if (args.out / "commands.jsonl").is_file():
            append_new(args.out / "commands.jsonl", dest / "commands.jsonl")
    return dest


def starting_points(args: argparse.Namespace) -> list[str]:
    """The converged standard models: top-1, epochs, machine and wall time of each."""
    dest = args.docs / "at_scale"
    log = dest / "commands.jsonl"
    cmds = [json.loads(x) for x in log.read_text().splitlines()] if log.is_file() else []
    lines = ["| model | test top-1 % | epochs | machine | wall time | command |",
             "|---|---:|---:|---|---:|---|",
             "| resnet20 | 87.55 | 30 | see ../shared/pretrained/README.md | – | "
             "(shared, not trained here) |"]
    for folder in sorted(dest.glob("*-standard")):
        epochs = (folder / "metrics.jsonl").read_text().splitlines()
        if not epochs:
            continue
        m = json.loads(epochs[-1])
        mine = [c for c in cmds if " -m pof train " in c["cmd"]  # its own --out only,
                and out_of(c["cmd"]).name == folder.name]         # not an arm's --init
        wall = sum(c["wall_s"] for c in mine)
        machine = "; ".join(sorted({c.get("host", "?") for c in mine})) or "?"
        cmd = shown([a for a in shlex.split(mine[0]["cmd"]) if a != "--resume"]
                    ) if mine else "?"
        lines.append(f"| {folder.name.removesuffix('-standard')} | {100 * m['test_top1']:.2f} | "
                     f"{m['epoch']} | {machine} | {wall:.0f} s | `{cmd}` |")
    return ["## Converged starting points", "",
            "Every arm of a model continues its standard model, trained with the recipe "
            "(recipes/cifar10_<model>_standard.yaml; configs and metrics in "
            "[at_scale/](at_scale/), every command with its wall time in "
            "[at_scale/commands.jsonl](at_scale/commands.jsonl); wall times with other runs "
            "beside them on the same machine):", "", *lines, ""]


def kept_section(args: argparse.Namespace) -> list[str]:
    """Each model's kept checkpoints and their last re-sweep (``on_the_fly.py --verify``)."""
    lines = []
    for model in ("resnet20", "resnet56"):
        ns = argparse.Namespace(model=model)
        where = f"checkpoints/{otf.results_name(ns)}"
        verified = args.docs / where / "verify.json"
        flag = "" if model == "resnet20" else f" --model {model}"
        if not verified.is_file():
            lines += [f"{model}: none verified yet (`python bench/on_the_fly.py --keep{flag}`, "
                      f"then `--verify{flag}`).", ""]
            continue
        check = json.loads(verified.read_text())
        lines += [f"{model}: model-only copies of seed 0 in `{where}/`, re-swept with "
                  f"`python bench/on_the_fly.py --verify{flag}` on {check['date']}:", "",
                  *(f"- {r['checkpoint']}: largest difference {r['max_diff']:.2f} points over "
                    f"{r['cells']} cells (`{r['command']}`)" for r in check["runs"]), ""]
    return lines


def publish(args: argparse.Namespace, echo: bool = True) -> None:
    """docs/results/cifar10.md from the converged-model runs only."""
    if getattr(args, "out", None):  # --no-archive (bench/on_the_fly.py --report-only): none
        archive_runs(args)
    mbv2_page(args)
    mbv2 = args.docs / "mobilenet_v2_70.md"
    text = ["# CIFAR-10 from converged models: pof against GMP and recalibrated one-shot "
            "pruning", "",
            f"Generated by `python bench/at_scale.py --report-only` on "
            f"{time.strftime('%Y-%m-%d')} from the archived runs only (docs/results/"
            "on_the_fly*/); the machine of each part is named below. Our JPEG copy of CIFAR-10 "
            "(../shared/data/cifar10, quality 75), so compare arms with "
            "each other, not with published CIFAR-10 numbers. The short-schedule study "
            "that came before (8-epoch models) is archived in "
            "[archive/cifar10_short_schedule.md](archive/cifar10_short_schedule.md).", "",
            *starting_points(args),
            *model_section("resnet20", args), *model_section("resnet56", args),
            "## MobileNetV2-CIFAR at 70%, first conv dense, with fine-tuning", "",
            *(mbv2.read_text().splitlines()[2:] if mbv2.is_file() else
              ["Not run yet: `python bench/at_scale.py --steps pretrain,mbv2`.", ""]),
            "## Kept checkpoints", ""]
    text += kept_section(args)
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / "cifar10.md").write_text("\n".join(text))
    rows = otf.rows_of(argparse.Namespace(model="resnet20", docs=args.docs))
    readme = args.readme or (ROOT / "README.md" if args.docs.resolve() == DOCS else None)
    if rows and readme:  # the project's README only from the project's own results
        inject(readme, "headline", "\n".join(headline(rows)))
    if echo:
        print("\n".join(text))


# the on-the-fly protocol's arms, in the order they are started (ORDER: headline first)
PROTOCOL = tuple(a for a in otf.ORDER if a in {"standard", "pof-range", "cram", *otf.DEDICATED})


def protocol(model: str, init: Path, seeds: str, args: argparse.Namespace) -> None:
    """bench/on_the_fly.py's protocol arms for one model, ``--jobs`` at a time."""
    subprocess.run([sys.executable, str(ROOT / "bench" / "on_the_fly.py"), "--device",
                    args.device, "--epochs", f"{args.epochs:g}", "--data", str(args.data),
                    "--docs", str(args.docs), "--arms", ",".join(PROTOCOL), "--seeds", seeds,
                    "--jobs", str(args.jobs),
                    *(["--model", model, "--init", str(init)] if model != "resnet20" else [])],
                   check=True, cwd=ROOT)


def resnet56_track(steps: list[str], seed: str, args: argparse.Namespace, log: Path) -> None:
    std = pretrain("resnet56", args, log)
    if "on_the_fly" in steps:
        protocol("resnet56", std, seed, args)


def mbv2_track(steps: list[str], seeds: list[int], args: argparse.Namespace,
               log: Path) -> None:
    std = pretrain("mobilenet_v2_cifar", args, log)
    if "mbv2" not in steps:
        return
    runs = [(a, s) for s in seeds for a in ("conventional", "gmp", "pof")]
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda r: mbv2_arm(*r, std, args, log), runs))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", default=",".join(STEPS), help=f"subset of {','.join(STEPS)}")
    p.add_argument("--device", default="cuda")
    p.add_argument("--jobs", type=int, default=4,
                   help="runs at once per model (the models go side by side, each after "
                   "its own pretrain)")
    p.add_argument("--seeds", default="0,1,2", help="ResNet-20 seeds (ResNet-56: the first; "
                   "MobileNetV2: the first two)")
    p.add_argument("--pretrain-epochs", type=float, default=30)
    p.add_argument("--epochs", type=float, default=4, help="budget B of every arm")
    p.add_argument("--ft-epochs", type=float, default=4, help="fine-tuning budget F")
    p.add_argument("--ft-lr", type=float, default=0.01)
    p.add_argument("--mbv2-width", type=float, default=1.0,
                   help="MobileNetV2's width multiplier (below 1 to fit a CPU; the page says so)")
    p.add_argument("--data", type=Path, default=Path(os.environ.get("POF_CIFAR10", DATA)))
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "at_scale")
    p.add_argument("--docs", type=Path, default=DOCS)
    p.add_argument("--readme", type=Path, default=None,
                   help="the page whose headline block gets ResNet-20's table (default: "
                   "README.md when --docs is docs/results)")
    p.add_argument("--report-only", action="store_true",
                   help="only rebuild docs/results/cifar10.md (and the README's table) from the "
                   "archived runs")
    p.add_argument("--no-archive", action="store_true",
                   help="with --report-only: archive nothing from --out, only rebuild the pages "
                   "(bench/on_the_fly.py --report-only runs this)")
    p.add_argument("--quiet", action="store_true", help="with --report-only: print nothing")
    args = p.parse_args()
    if args.report_only:
        if args.no_archive:
            args.out = None
        return publish(args, echo=not args.quiet)
    steps = args.steps.split(",")
    if set(steps) - set(STEPS) or args.jobs < 1 or not 0 < args.mbv2_width <= 1:
        sys.exit(f"--steps takes {','.join(STEPS)}; --jobs at least 1; --mbv2-width in (0, 1]")
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "commands.jsonl"
    tracks = []  # one per model, side by side: a model's arms wait only for its own pretrain
    if "on_the_fly" in steps:
        tracks.append(lambda: protocol("resnet20", PRETRAINED, args.seeds, args))
    if {"pretrain", "on_the_fly"} & set(steps):
        tracks.append(lambda: resnet56_track(steps, str(seeds[0]), args, log))
    if {"pretrain", "mbv2"} & set(steps):
        tracks.append(lambda: mbv2_track(steps, seeds[:2], args, log))
    try:
        with ThreadPoolExecutor(len(tracks)) as pool:
            for done in [pool.submit(t) for t in tracks]:
                done.result()  # a failed track stops the script once the others have ended
    finally:  # once more, after every part (the parts ran in parallel), failed ones too
        publish(args, echo=False)


if __name__ == "__main__":
    main()
