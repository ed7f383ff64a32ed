"""Structured on the fly (issue 24): one channel-range training, any width at deploy time.

From the converged ResNet-20 (../shared/pretrained), for each budget B (epochs) and seed:

- range: ``pof train --structure channel --sparsity 0:0.5 --subnet-distill 1`` (one model),
  deployed at every width of WIDTHS with ``pof prune --structure channel --sparsity k
  --recover mean --bn-recal 20 --onnx`` (BatchNorm statistics re-estimated per width);
- pof<k>: a pof model trained for one width (``--structure channel --sparsity k``),
  deployed at k the same way;
- tp<k>: Torch-Pruning's group-magnitude pruning of the pretrained model at k
  (``pof prune --importance magnitude``), then ``pof finetune`` for the same B epochs;
- tpgn<k>: Torch-Pruning's group-norm pruner: B/2 epochs of its sparsity regularisation
  from the pretrained model, pruned at k (bench/tp_group_norm.py), ``pof finetune`` for
  the other B/2;
- oneshot (no training, once): the pretrained model pruned at each k by magnitude, mean
  recovery and BatchNorm re-estimation.

Each model's starting checkpoint is evaluated once (its top-1 heads the page; a pof run
folder that trained it keeps its config and metrics in the archive). Then the onnxruntime
latency of the range model's exported widths (batch 1 and 64, interleaved, one thread) and
``pof prune --speedup 2 --latency-batch 64`` on it (the self-teacher range model, else the
frozen-teacher one). MobileNetV2-CIFAR (depthwise groups) runs every arm but pof<k> at 25%
and 50% with ``--mobilenet-init CONVERGED.safetensors`` (one seed, first budget).

    python bench/structured_range.py                       # budgets 4,12; seeds 0,1,2
    python bench/structured_range.py --budgets 4 --seeds 0 --arms range,tp
    python bench/structured_range.py --report-only         # rebuild docs/results/structured.md
    python bench/structured_range.py --model small_cnn --data digits --init none \\
        --budgets 0.5 --seeds 0 --widths 0,0.25,0.5 --out /tmp/sr --docs /tmp/sr-docs  # smoke

Every command is printed before it runs and logged with its wall time in OUT/commands.jsonl.
A finished run's config, metrics and deploy results are kept in
docs/results/structured/<model>-<arm>-b<B>-s<seed>/ (the page is built from there, and a
later session skips them); kill the script at any time and start it again (an interrupted
training continues with ``--resume``).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from runner import DATA, PRETRAINED, ROOT, append_new, host, inject, pof, portable, ran, train_once

BN_RECAL = 20
WIDTHS = (0.0, 0.125, 0.25, 0.375, 0.5)
MOBILE, MOBILE_WIDTHS = "mobilenet_v2_cifar", (0.25, 0.5)
RANGE_LABELS = (("range", "range model"), ("rangeinit", "range, frozen teacher"))
ARM_KINDS = ("range", "rangeinit", "pof", "tp", "tpgn", "oneshot")
KEEP = ("config.yaml", "metrics.jsonl")
# the trained arms' names in run folders and logged commands (rangeinit before range)
TRAINED = r"rangeinit|range|pof[\d.]+|tpgn[\d.]+|tp[\d.]+"


# ---------------------------------------------------------------- running
def run_out(cmd: list[str], log: Path) -> str:
    """Run ``cmd`` (printed first), log it as ``runner.run`` does; return its stdout."""
    import torch

    print("$ " + shlex.join(cmd), flush=True)
    t = time.time()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    print(r.stdout, end="", flush=True)
    print(r.stderr, end="", file=sys.stderr, flush=True)
    r.check_returncode()
    with open(log, "a") as f:
        f.write(json.dumps({"cmd": shlex.join(cmd), "wall_s": round(time.time() - t, 1),
                            "host": host(), "torch": torch.__version__}) + "\n")
    return r.stdout


def top1_after(text: str) -> float:
    """Top-1 % that ``pof prune`` (after) or ``pof eval`` printed."""
    m = re.search(r"after ([\d.]+)%", text) or re.search(r"top1 ([\d.]+)%", text)
    if m is None:
        raise SystemExit(f"no top-1 in the output:\n{text}")
    return float(m[1])


def common(args: argparse.Namespace, init: str | None, budget: float, seed: int
           ) -> list[str]:
    """``pof train`` options every trained arm shares."""
    opts = ["--model", args.model, "--data", str(args.data), "--epochs", f"{budget:g}",
            "--lr", f"{args.lr:g}", "--batch-size", "128", "--weight-decay", "5e-4",
            "--schedule", "cosine", "--warmup-epochs", "0", "--workers", "0",
            "--ckpt-every", "100", "--no-progress", "--seed", str(seed)]
    return opts + (["--init", init] if init else []) + device(args)


def device(args: argparse.Namespace) -> list[str]:
    return ["--device", args.device] if args.device else []


def prune_cmd(src: Path, out: Path, k: float, args: argparse.Namespace, importance: str = "pof",
              recover: str = "mean", bn: int = BN_RECAL, *extra: str) -> list[str]:
    return pof("prune", str(src), "--structure", "channel", "--sparsity", f"{k:g}",
               "--importance", importance, "--recover", recover, "--bn-recal", str(bn),
               "--data", str(args.data), "--onnx", "--out", str(out), *extra, *device(args))


def deploy(src: Path, out: Path, k: float, args: argparse.Namespace, log: Path,
           importance: str = "pof") -> dict:
    """Prune ``src`` at ``k`` (mean recovery, BatchNorm re-estimation, ONNX): its row."""
    done = out / "deploy.json"
    if done.is_file():
        return json.loads(done.read_text())
    text = run_out(prune_cmd(src, out, k, args, importance), log)
    from pof.training.checkpoint import model_from_checkpoint

    model, _ = model_from_checkpoint(out / "pruned.safetensors")
    row = {"sparsity": k, "top1": top1_after(text),
           "params": sum(p.numel() for p in model.parameters())}
    done.write_text(json.dumps(row) + "\n")
    return row


# ---------------------------------------------------------------- arms
def run_name(model: str, arm: str, budget: float | None, seed: int | None) -> str:
    b = "" if budget is None else f"-b{budget:g}"
    s = "" if seed is None else f"-s{seed}"
    return f"{model}-{arm}{b}{s}"


def keep_files(src: Path, dest: Path) -> None:
    """Copy the run files worth keeping (``KEEP``) that ``src`` has into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in KEEP:
        if (src / f).is_file():
            shutil.copyfile(src / f, dest / f)


def archive(name: str, out: Path, rows: list[dict], args: argparse.Namespace, log: Path
            ) -> None:
    """Keep a finished run's small files and its commands under docs/results/structured/."""
    keep = args.docs / "structured" / name
    keep_files(out, keep)
    (keep / "deploy.json").write_text(json.dumps(rows, indent=1) + "\n")
    append_new(log, args.docs / "structured" / "commands.jsonl", lambda cmd: ran(cmd, name))


def done(name: str, args: argparse.Namespace) -> bool:
    if (args.docs / "structured" / name / "deploy.json").is_file():
        print(f"# done already: {name}")
        return True
    return False


def run_range(model: str, init: str | None, budget: float, seed: int, widths, args, log,
              teacher: str = "self"):
    """The channel-range model; ``teacher`` init distils the frozen starting model
    (arm ``rangeinit``) instead of the full width of the model in training."""
    name = run_name(model, "range" if teacher == "self" else f"range{teacher}", budget, seed)
    if done(name, args):
        return
    out = args.out / name
    lo_hi = f"0:{max(widths):g}"
    extra = [] if teacher == "self" else ["--subnet-teacher", teacher]
    ckpt = train_once(pof("train", *common(args, init, budget, seed), "--penalty", "pof",
                          "--structure", "channel", "--sparsity", lo_hi,
                          "--subnet-distill", "1", *extra, "--penalty-warmup", "0.5"), out,
                      log)
    rows = [deploy(ckpt, out / f"deploy-{k:g}", k, args, log) for k in widths]
    archive(name, out, rows, args, log)


def run_dedicated(model: str, init: str | None, budget: float, seed: int, k: float, args,
                  log):
    name = run_name(model, f"pof{k:g}", budget, seed)
    if done(name, args):
        return
    out = args.out / name
    ckpt = train_once(pof("train", *common(args, init, budget, seed), "--penalty", "pof",
                          "--structure", "channel", "--sparsity", f"{k:g}",
                          "--penalty-warmup", "0.5"), out, log)
    archive(name, out, [deploy(ckpt, out / "deploy", k, args, log)], args, log)


def run_tp(model: str, init: str, budget: float, seed: int, k: float, args, log):
    """Torch-Pruning magnitude at ``k``, then fine-tuning for ``budget`` epochs."""
    name = run_name(model, f"tp{k:g}", budget, seed)
    if done(name, args):
        return
    out = args.out / name
    pruned = out / "pruned"
    row0 = deploy(Path(init), pruned, k, args, log, importance="magnitude")
    ft = out / "ft"
    ckpt = train_once(pof("finetune", str(pruned / "pruned.safetensors"), "--epochs",
                          f"{budget:g}", "--lr", f"{args.ft_lr:g}", "--workers", "0",
                          "--no-progress", "--seed", str(seed), "--data", str(args.data),
                          *device(args)), ft, log)
    top1 = top1_after(run_out(pof("eval", str(ckpt), "--data", str(args.data),
                                  *device(args)), log))
    keep_files(ft, out)
    archive(name, out, [{**row0, "top1_no_ft": row0["top1"], "top1": top1}], args, log)


def run_tpgn(model: str, init: str, budget: float, seed: int, k: float, args, log):
    """Torch-Pruning's group-norm pruner: half the budget regularised, pruned at ``k``,
    the other half fine-tuned."""
    name = run_name(model, f"tpgn{k:g}", budget, seed)
    if done(name, args):
        return
    out = args.out / name
    reg = out / "regularised"
    if not (reg / "pruned.safetensors").is_file():
        run_out([sys.executable, str(ROOT / "bench" / "tp_group_norm.py"), "--init", init,
                 "--data", str(args.data), "--sparsity", f"{k:g}", "--epochs",
                 f"{budget / 2:g}", "--lr", f"{args.lr:g}", "--seed", str(seed), "--out",
                 str(reg)], log)
    ft = out / "ft"
    ckpt = train_once(pof("finetune", str(reg / "pruned.safetensors"), "--epochs",
                          f"{budget / 2:g}", "--lr", f"{args.ft_lr:g}", "--workers", "0",
                          "--no-progress", "--seed", str(seed), "--data", str(args.data),
                          *device(args)), ft, log)
    top1 = top1_after(run_out(pof("eval", str(ckpt), "--data", str(args.data),
                                  *device(args)), log))
    res = json.loads((reg / "result.json").read_text())
    keep_files(ft, out)
    archive(name, out, [{"sparsity": k, "top1": top1, "params": res["params"],
                         "top1_no_ft": res["top1_pruned"]}], args, log)


def run_oneshot(model: str, init: str, widths, args, log):
    """The pretrained model pruned one-shot at each width (magnitude, mean, BN)."""
    name = run_name(model, "oneshot", None, None)
    if done(name, args):
        return
    out = args.out / name
    rows = [deploy(Path(init), out / f"deploy-{k:g}", k, args, log, "magnitude")
            for k in widths if k > 0]
    archive(name, out, rows, args, log)


def record_start(model: str, init: str | None, args, log) -> None:
    """The starting model's test top-1 (``pof eval``), once: start-<model>.json. Where a pof
    run folder trained it, its config and metrics are kept beside (the commands and wall
    time of such a pretrain go in commands.jsonl by hand: it may span sessions)."""
    path = args.docs / "structured" / f"start-{model}.json"
    if init is None or path.is_file():
        return
    text = run_out(pof("eval", str(init), "--data", str(args.data), *device(args)), log)
    rec = {"checkpoint": portable(str(Path(init).resolve())), "top1": top1_after(text)}
    run = Path(init).resolve().parent
    if all((run / f).is_file() for f in KEEP):
        keep_files(run, args.docs / "structured" / run.name)
        rec["trained"] = run.name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec, indent=1) + "\n")


# ---------------------------------------------------------------- latency
def range_source(model: str, args) -> Path:
    """The range model the latency and ``--speedup`` checks use (seed 0, first budget): the
    self-teacher one, else the frozen-teacher one once archived (the same widths, so the
    same exported shapes)."""
    names = [run_name(model, arm, args.budgets[0], args.seeds[0]) for arm, _ in RANGE_LABELS]
    found = [n for n in names if (args.docs / "structured" / n / "deploy.json").is_file()]
    return args.out / (found or names)[0]


def measure_latency(model: str, widths, args, log) -> None:
    """onnxruntime latency of the range model's exported widths (:func:`range_source`),
    batch 1 and 64, interleaved; archived as latency-<model>.json."""
    path = args.docs / "structured" / f"latency-{model}.json"
    if path.is_file():
        return
    import onnxruntime

    from pof.export.latency import interleaved_medians, machine, runtime
    from pof.export.onnx import session

    src = range_source(model, args)
    files = {k: src / f"deploy-{k:g}" / "model.onnx" for k in widths}
    if not all(f.is_file() for f in files.values()):
        print(f"# latency not measured: {src} has not deployed every width")
        return
    rows = []
    for batch in (1, 64):
        runners = {}
        for k, f in files.items():
            sess = session(f, args.threads)
            inp = sess.get_inputs()[0]
            x = {inp.name: _random(batch, inp.shape[1:])}
            runners[k] = (lambda s=sess, x=x: s.run(None, x))
        med = interleaved_medians(runners, args.repeats)
        rows += [{"sparsity": k, "batch": batch, "ms": 1000 * med[k],
                  "speedup": med[0.0] / med[k]} for k in files]
    path.write_text(json.dumps({
        "runtime": runtime(args.threads), "onnxruntime": onnxruntime.__version__,
        "machine": machine(), "repeats": args.repeats, "note": args.note,
        "date": time.strftime("%Y-%m-%d"), "source": portable(str(src)), "rows": rows},
        indent=1) + "\n")


def _random(batch: int, shape) -> object:
    import numpy as np

    return np.random.default_rng(0).standard_normal((batch, *shape)).astype("float32")


def speedup_check(model: str, args, log) -> None:
    """``pof prune --speedup 2 --latency-batch 64`` on the range model (:func:`range_source`)."""
    path = args.docs / "structured" / f"speedup-{model}.json"
    if path.is_file():
        return
    from pof.training.checkpoint import read_meta

    src = range_source(model, args)
    out = src / "speedup2"
    if not (src / "final.safetensors").is_file():
        return
    cmd = pof("prune", str(src / "final.safetensors"), "--structure", "channel",
              "--speedup", "2", "--latency-batch", "64", "--threads", str(args.threads),
              "--recover", "mean", "--bn-recal", str(BN_RECAL), "--data", str(args.data),
              "--onnx", "--out", str(out), *device(args))
    try:
        text = run_out(cmd, log)
    except subprocess.CalledProcessError as e:  # no width met it: the page says pof's words
        said = (e.stderr or "").strip().splitlines() or [str(e)]
        path.write_text(json.dumps({"met": False, "command": portable_cmd(cmd),
                                    "error": said[-1]}) + "\n")
        return
    lat = read_meta(out / "pruned.safetensors")["latency"]
    path.write_text(json.dumps({"met": lat["ms"] <= lat["dense_ms"] / 2,
                                "top1": top1_after(text), "command": portable_cmd(cmd),
                                "latency": lat}, indent=1) + "\n")
    append_new(log, args.docs / "structured" / "commands.jsonl", lambda c: "/speedup2" in c)


def portable_cmd(cmd: list[str]) -> str:
    return shlex.join(["pof", *map(portable, cmd[3:])])


# ---------------------------------------------------------------- report
def mean_pm(xs: list[float]) -> str:
    if not xs:
        return "–"
    spread = f" ± {(max(xs) - min(xs)) / 2:.2f}" if len(xs) > 1 else ""
    return f"{statistics.mean(xs):.2f}{spread} ({len(xs)})"


def collect(docs: Path) -> dict[tuple, list[dict]]:
    """Archived rows by (model, arm, budget) -> [row, ...] over seeds."""
    out: dict[tuple, list[dict]] = {}
    for d in sorted((docs / "structured").glob("*")):
        m = re.fullmatch(rf"(.+?)-({TRAINED}|oneshot)(?:-b([\d.]+))?(?:-s(\d+))?", d.name)
        if not m or not (d / "deploy.json").is_file():
            continue
        model, arm, b = m[1], m[2], float(m[3]) if m[3] else None
        kind = re.sub(r"[\d.]+$", "", arm)
        for row in json.loads((d / "deploy.json").read_text()):
            out.setdefault((model, kind, b), []).append(row)
    return out


def cell(rows: list[dict], k: float, key: str = "top1") -> list[float]:
    return [r[key] for r in rows if abs(r["sparsity"] - k) < 1e-9 and key in r]


def wall_times(docs: Path) -> dict[str, float]:
    """Mean training wall seconds per (model, arm kind, budget) label, from the log."""
    log = docs / "structured" / "commands.jsonl"
    per: dict[str, float] = {}
    if not log.is_file():
        return per
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        m = re.search(rf"/([\w.]+?-(?:{TRAINED})-b[\d.]+-s\d+)(?=[/\s]|$)", rec["cmd"])
        if m and re.search(r" -m pof (train|finetune)|tp_group_norm\.py", rec["cmd"]):
            per[m[1]] = per.get(m[1], 0.0) + rec["wall_s"]
    return per


def report(args: argparse.Namespace) -> str:
    data = collect(args.docs)
    folder = ("[structured/](structured/)" if (args.docs / "structured").is_dir()
              else "structured/")  # a link once the folder exists
    lines = ["# Structured on the fly: one channel-range model, any width at deploy time", "",
             "Generated by `python bench/structured_range.py --report-only` from the runs "
             f"archived in {folder} (every command with its wall time and "
             "machine: `structured/commands.jsonl`). Top-1 % on the test split, mean ± half "
             "the range over seeds (count in brackets); no fine-tuning except Torch-Pruning's.",
             "", "Arms: **range** one `pof train --structure channel --sparsity 0:0.5 "
             "--subnet-distill 1` model deployed at each width (`pof prune --structure channel "
             f"--sparsity k --recover mean --bn-recal {BN_RECAL}`); **range, frozen teacher** the "
             "same with `--subnet-teacher init` (the narrow widths distil the frozen starting "
             "model instead of the full width in training), where run; **pof k** a model "
             "trained for that width; **TP + FT** Torch-Pruning group-magnitude pruning then "
             "`pof finetune` for the same epochs; **TP group-norm + FT** Torch-Pruning's "
             "`GroupNormPruner`: half the epochs of its regularisation, pruned, half fine-tuned "
             "(`bench/tp_group_norm.py`); **one-shot + BN** the pretrained model pruned by "
             f"magnitude with mean recovery and BatchNorm re-estimation ({BN_RECAL} batches), "
             "no training.",
             ""]
    models = sorted({k[0] for k in data}, key=lambda m: (m == MOBILE, m))  # MobileNet last
    walls = wall_times(args.docs)
    for model in models:
        rec = measured(args.docs, model)
        lat = rec["latency"]
        st = rec["start"]
        if st:
            how = (f"; trained by pof, its config and metrics in `structured/{st['trained']}/`"
                   if "trained" in st else "")
            lines += [f"Starting model ({model}): `{st['checkpoint']}`, top-1 {st['top1']:.2f}%"
                      f"{how}.", ""]
        budgets = sorted({k[2] for k in data if k[0] == model and k[2] is not None})
        one = data.get((model, "oneshot", None), [])
        for b in budgets:
            rng = data.get((model, "range", b), [])
            rinit = data.get((model, "rangeinit", b), [])
            widths = sorted({r["sparsity"] for r in rng + rinit + one})
            lines += [f"## {model}, {b:g} epochs", "",
                      "| channels removed | params | range model | "
                      + ("range, frozen teacher | " if rinit else "")
                      + "pof for this width | TP + FT | TP group-norm + FT | one-shot + BN | "
                      "ms b1 | ms b64 | speed-up b64 |",
                      "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
                      + ("---:|" if rinit else "")]
            for k in widths:
                params = (cell(rng + rinit + one, k, "params") or ["–"])[0]
                ms = {bt: [r for r in (lat or {}).get("rows", [])
                           if r["batch"] == bt and abs(r["sparsity"] - k) < 1e-9]
                      for bt in (1, 64)}
                m1 = f"{ms[1][0]['ms']:.2f}" if ms[1] else "–"
                m64 = f"{ms[64][0]['ms']:.2f}" if ms[64] else "–"
                sp = f"{ms[64][0]['speedup']:.2f}x" if ms[64] else "–"
                ri = f"{mean_pm(cell(rinit, k))} | " if rinit else ""
                lines.append(
                    f"| {100 * k:g}% | {params:,} | {mean_pm(cell(rng, k))} | {ri}"
                    f"{mean_pm(cell(data.get((model, 'pof', b), []), k))} | "
                    f"{mean_pm(cell(data.get((model, 'tp', b), []), k))} | "
                    f"{mean_pm(cell(data.get((model, 'tpgn', b), []), k))} | "
                    f"{mean_pm(cell(one, k))} | {m1} | {m64} | {sp} |"
                    if isinstance(params, int) else
                    f"| {100 * k:g}% | – | {mean_pm(cell(rng, k))} | {ri}– | – | – | – | {m1} "
                    f"| {m64} | {sp} |")
            lines += ["", *targets(model, b, data, rec), ""]
            costs = {lab: s for lab, s in walls.items() if lab.startswith(f"{model}-")
                     and f"-b{b:g}-" in lab}
            if costs:
                by_kind: dict[str, list[float]] = {}
                for lab, s in costs.items():
                    kind = re.sub(r"-b.*", "", lab[len(model) + 1:])
                    by_kind.setdefault(kind, []).append(s)
                lines += ["Training wall time per run (mean over seeds, s): " + ", ".join(
                    f"{k} {statistics.mean(v):,.0f}" for k, v in sorted(by_kind.items())), ""]
        if lat:
            lines += [f"Latency ({model}): {lat['runtime']}, {lat['machine']}, median of "
                      f"{lat['repeats']} interleaved rounds, exported range-model widths "
                      f"({lat['source']}); {lat['date']}. {lat.get('note') or ''}", ""]
        rd = rec["rounding"]
        if rd:
            from channel_rounding import multiples, table

            ns = multiples(rd)
            lines += [f"### Widths rounded to a multiple of {' or '.join(map(str, ns))} "
                      f"(`pof prune --round-to N`)", "",
                      f"`{rd['command']}`: {rd['runtime']}, {rd['machine']}, median of "
                      f"{rd['repeats']} interleaved rounds, exact and rounded exports timed side "
                      f"by side; {rd['date']}. {rd.get('note') or ''}", "", *table(rd), "",
                      *rounding_noise(rd)]
        sp = rec["speedup"]
        if sp:
            if "latency" in sp:
                la = sp["latency"]
                lines += [f"`{sp['command']}` picked {100 * la['sparsity']:g}% of channels "
                          f"removed{rounded_as(la)}: {la['ms']:.2f} ms vs dense "
                          f"{la['dense_ms']:.2f} ms at batch "
                          f"{la['batch']} ({la['speedup']:.2f}x; target at most half the dense "
                          f"latency: {'met' if sp['met'] else 'missed'}), top-1 {sp['top1']:.2f}% "
                          f"({la['machine']}).", ""]
            else:
                lines += [f"`{sp['command']}`: no width met it ({sp['error']}).", ""]
    if not models:
        lines.append("No archived runs yet.")
    return "\n".join(lines).rstrip() + "\n"


def rounded_as(la: dict) -> str:
    """What rounding made of the width ``pof prune --speedup`` picked ('' when exact)."""
    n = la.get("round_to", 1)
    rows = la.get("table", [])
    row = next((r for r in rows if r["sparsity"] == la["sparsity"] and r.get("round_to", 1) == n
                and "channels" in r), None)
    if n == 1 or row is None:
        return ""
    gone = 1 - sum(row["channels"]) / sum(rows[0]["channels"])
    return (f", kept channels rounded to a multiple of {n} ({100 * gone:.1f}% of the conv "
            "channels removed)")


def rounding_noise(rd: dict) -> list[str]:
    """The dense model is exported once per multiple (the same channels); how far apart
    those timed at batch 64 is the noise floor of that table."""
    from channel_rounding import noise

    gap = noise(rd)
    if gap is None:
        return []
    return [f"Noise: the dense model's identical exports timed {100 * gap:.0f}% apart in this "
            "run; differences smaller than that are not measured.", ""]


def best_dedicated(data: dict, model: str, b: float, k: float) -> tuple[float, str] | None:
    """The best dedicated arm at ``k`` of channels removed and budget ``b``: (mean top-1,
    name), or None where none ran."""
    best = [(statistics.mean(v), name) for name, v in (
        ("pof", cell(data.get((model, "pof", b), []), k)),
        ("TP + FT", cell(data.get((model, "tp", b), []), k)),
        ("TP group-norm + FT", cell(data.get((model, "tpgn", b), []), k))) if v]
    return max(best) if best else None


def measured(docs: Path, model: str) -> dict[str, dict | None]:
    """The archived starting-model, latency, rounding and ``--speedup`` records of
    ``model`` (None where not run)."""
    paths = {name: docs / "structured" / f"{name}-{model}.json"
             for name in ("start", "latency", "rounding", "speedup")}
    return {name: json.loads(p.read_text()) if p.is_file() else None
            for name, p in paths.items()}


def targets(model: str, b: float, data: dict, rec: dict[str, dict | None]) -> list[str]:
    """The issue's targets, each against the measured number (``rec``: :func:`measured`)."""
    out = []
    for kind, label in RANGE_LABELS:
        for k in (0.25, 0.5):
            best = best_dedicated(data, model, b, k)
            mine = cell(data.get((model, kind, b), []), k)
            if best and mine:
                top, who = best
                gap = top - statistics.mean(mine)
                where = f"{gap:.2f} behind" if gap > 0 else f"{-gap:.2f} ahead"
                out.append(f"- {100 * k:g}% of channels: {label} {statistics.mean(mine):.2f} "
                           f"({len(mine)} seed(s)) vs best dedicated ({who}) {top:.2f}: {where} "
                           f"(target: at most 1.0 behind: {'met' if gap <= 1.0 else 'missed'}).")
    tp = cell(data.get((model, "tp", b), []), 0.5)
    for kind, label in RANGE_LABELS:
        mine = cell(data.get((model, kind, b), []), 0.5)
        if tp and mine:
            d = statistics.mean(mine) - statistics.mean(tp)
            out.append(f"- 50%: {label} {'ahead of' if d >= 0 else 'behind'} TP + FT by "
                       f"{abs(d):.2f} at the same epochs (costs: the wall times below).")
    runs = half_width_speedups(rec)
    if runs:
        met = sum(x >= 2 for _, x in runs)
        verdict = ("met" if met == len(runs) else "missed" if not met
                   else f"met in {met} of {len(runs)} runs")
        out.append("- 50% at batch 64, faster than dense in onnxruntime: " + ", ".join(
            f"{x:.2f}x ({where})" for where, x in runs) + f" (target >= 2: {verdict}).")
    return out


def half_width_speedups(rec: dict[str, dict | None]) -> list[tuple[str, float]]:
    """Every measured speed-up of the exact 50% width over dense at batch 64: the latency
    table's, the rounding run's, the ``--speedup`` run's (``rec``: :func:`measured`)."""
    def at_half(rows: list[dict]) -> list[float]:
        return [r["speedup"] for r in rows if r.get("batch", 64) == 64
                and r.get("round_to", 1) == 1 and abs(r["sparsity"] - 0.5) < 1e-9]

    sp = (rec["speedup"] or {}).get("latency")
    found = [("latency table", at_half((rec["latency"] or {}).get("rows", []))),
             ("rounding run", at_half((rec["rounding"] or {}).get("rows", []))),
             ("--speedup run", at_half([{**r, "batch": sp["batch"]} for r in sp["table"]]
                                       if sp else []))]
    return [(where, xs[0]) for where, xs in found if xs]


def readme_table(args: argparse.Namespace) -> list[str]:
    """The README's width -> accuracy -> latency rows at each model's first budget: ResNet-20,
    then MobileNetV2-CIFAR where archived."""
    data = collect(args.docs)
    out = []
    for model, name in (("resnet20", "ResNet-20"), (MOBILE, "MobileNetV2-CIFAR")):
        rows = readme_rows(data, args, model, name)
        out += ([""] if out and rows else []) + rows
    return out or ["(not run yet)"]


def readme_rows(data: dict, args: argparse.Namespace, model: str, name: str) -> list[str]:
    """One model's README table (empty when no range model is archived); a range variant
    not archived for it gets no column."""
    budgets = sorted({k[2] for k in data if k[0] == model and k[1] in ("range", "rangeinit")})
    if not budgets:
        return []
    b = budgets[0]
    lat = measured(args.docs, model)["latency"] or {}
    rng, one = data.get((model, "range", b), []), data.get((model, "oneshot", None), [])
    rinit = data.get((model, "rangeinit", b), [])
    variants = [(lab, rs) for lab, rs in (("range model", rng), ("range, frozen teacher", rinit))
                if rs]
    out = [f"{name} from the converged model, {b:g} epochs, mean ± half the range over seeds "
           "(count in brackets), no fine-tuning (Torch-Pruning: fine-tuned for the same "
           f"epochs); onnxruntime latency at batch 64 on {lat.get('machine', 'this machine')}:",
           "", "| channels removed | params | " + "".join(f"{lab} | " for lab, _ in variants)
           + "best model for this width | one-shot + BN | ms (b64) | speed-up |",
           "|---:|---:|---:|---:|---:|---:|" + "---:|" * len(variants)]
    for k in sorted({r["sparsity"] for r in rng + rinit}):
        best = best_dedicated(data, model, b, k)
        who = best and (f"pof {100 * k:g}%" if best[1] == "pof" else best[1])
        top = f"{best[0]:.2f} ({who})" if best else "–"
        ri = "".join(f"{mean_pm(cell(rs, k))} | " for _, rs in variants)
        ms = [r for r in lat.get("rows", []) if r["batch"] == 64
              and abs(r["sparsity"] - k) < 1e-9]
        params = (cell(rng + rinit, k, "params") or ["–"])[0]
        one_k = f"{statistics.mean(cell(one, k)):.2f}" if cell(one, k) else "–"
        m64, sp = (f"{ms[0]['ms']:.1f}", f"{ms[0]['speedup']:.2f}x") if ms else ("–", "–")
        out.append(f"| {100 * k:g}% | {params:,} | {ri}{top} "
                   f"| {one_k} | {m64} | {sp} |")
    return out


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--init", default=str(PRETRAINED),
                   help="converged model every arm starts from ('none': from scratch, smoke)")
    p.add_argument("--mobilenet-init", default=None,
                   help="converged MobileNetV2-CIFAR: its 25%%/50%% rows (one seed)")
    p.add_argument("--budgets", default="4,12", help="epochs per run, comma-separated")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--widths", default=",".join(f"{w:g}" for w in WIDTHS))
    p.add_argument("--arms", default=",".join(ARM_KINDS),
                   help=f"comma-separated, of {', '.join(ARM_KINDS)} (default: all)")
    p.add_argument("--lr", type=float, default=0.05, help="training lr")
    p.add_argument("--ft-lr", type=float, default=0.01, help="Torch-Pruning fine-tuning lr")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads")
    p.add_argument("--repeats", type=int, default=15, help="latency rounds")
    p.add_argument("--note", default="", help="the machine's load, for the latency line")
    p.add_argument("--device", default=None)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "structured_range")
    p.add_argument("--docs", type=Path, default=ROOT / "docs" / "results")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    args.budgets = [float(b) for b in args.budgets.split(",")]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    widths = [float(w) for w in args.widths.split(",")]
    if 0.0 not in widths:
        widths = [0.0, *widths]
    arms = set(args.arms.split(","))
    init = None if args.init == "none" else args.init
    if not args.report_only:
        args.out.mkdir(parents=True, exist_ok=True)
        log = args.out / "commands.jsonl"
        log.touch()
        plan = [(args.model, init, widths, args.seeds, args.budgets)]
        if args.mobilenet_init:
            plan.append((MOBILE, args.mobilenet_init, [0.0, *MOBILE_WIDTHS],
                         args.seeds[:1], args.budgets[:1]))
        for model, start, ws, seeds, budgets in plan:
            args.model = model
            record_start(model, start, args, log)
            if "oneshot" in arms and start:
                run_oneshot(model, start, ws, args, log)
            for b in budgets:
                for seed in seeds:
                    if "range" in arms:
                        run_range(model, start, b, seed, ws, args, log)
                    if "rangeinit" in arms and start:
                        run_range(model, start, b, seed, ws, args, log, teacher="init")
                    for k in (w for w in ws if w > 0):
                        if "pof" in arms and model == plan[0][0]:
                            run_dedicated(model, start, b, seed, k, args, log)
                        if "tp" in arms and start:
                            run_tp(model, start, b, seed, k, args, log)
                        if "tpgn" in arms and start:
                            run_tpgn(model, start, b, seed, k, args, log)
            measure_latency(model, ws, args, log)
            speedup_check(model, args, log)
    from pof.fileio import write_text

    page = args.docs / "structured.md"
    write_text(page, report(args))
    print(f"wrote {page}")
    if args.docs.resolve() == (ROOT / "docs" / "results").resolve():
        inject(ROOT / "README.md", "structured", "\n".join(readme_table(args)))


if __name__ == "__main__":
    main()
