"""Structured pof vs Torch-Pruning's magnitude pruning, through the real ``pof`` CLI.

Protocol (defaults: CIFAR-10 ResNet-20 from the converged standard model, 50% of the
channels of every channel group, 3 epochs of budget):

1. dense reference: ``pof eval`` of the pretrained model;
2. pof: continue training it with the channel penalty (``pof train --init PRE --penalty pof
   --structure channel``), prune the channels one-shot with mean (and zero) recovery, **no
   fine-tuning**; export ONNX;
3. Torch-Pruning: prune the pretrained model's channels by group L2 magnitude
   (``--importance magnitude``), without fine-tuning, and fine-tuned for the same budget
   as pof's training (``pof finetune``);
4. latency of the dense and channel-pruned widths (``bench/latency.py``, onnxruntime and
   eager, batch 1 and 64).

Every step prints its command and is skipped when its output exists, so the script can be
killed and started again (an interrupted training run continues with ``--resume``).

    python bench/structured.py                                   # the full CIFAR-10 run
    python bench/structured.py --data digits --model small_cnn --epochs 2 --out runs/st-digits
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10" / "cifar10-jpeg.tar.gz"
DEFAULT_INIT = (ROOT.parent / "shared" / "pretrained"
                / "cifar10-resnet20-standard-e30-s0.safetensors")


def run(cmd: list[str], log: Path, stdout: Path | None = None) -> str:
    """Run ``cmd`` (printed first) from the project root; return its stdout."""
    line = " ".join(shlex.quote(c) for c in cmd)
    print(f"$ {line}", flush=True)
    with open(log, "a") as f:
        f.write(f"$ {line}\n")
    t = time.time()
    r = subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True)
    print(r.stdout, end="", flush=True)
    with open(log, "a") as f:
        f.write(f"# {time.time() - t:.0f} s\n")
    if stdout is not None:
        stdout.write_text(r.stdout)
    return r.stdout


POF = [sys.executable, "-m", "pof"]


def train(out: Path, flags: list[str], log: Path) -> Path:
    """A finished run's final.safetensors (last.safetensors when --max-steps cut it short)."""
    final = out / "final.safetensors"
    if not final.exists():
        resume = ["--resume"] if (out / "last.safetensors").exists() else []
        run(POF + ["train", "--out", str(out), "--progress", "false", *flags, *resume], log)
    return final if final.exists() else out / "last.safetensors"


def top1(ckpt: Path, data: str, log: Path) -> float:
    """``pof eval`` (cached in the log's folder, never next to a shared file) -> top-1 %."""
    cache = log.parent / "evals" / (re.sub(r"[^\w.-]+", "_", str(ckpt)) + ".txt")
    cache.parent.mkdir(exist_ok=True)
    text = cache.read_text() if cache.exists() else run(
        POF + ["eval", str(ckpt), "--data", data], log, cache)
    return float(re.search(r"top1 ([\d.]+)%", text)[1])


def prune(src: Path, out: Path, args, importance: str, recover: str, log: Path) -> Path:
    path = out / "pruned.safetensors"
    if not path.exists():
        run(POF + ["prune", str(src), "--structure", "channel", "--sparsity", str(args.ratio),
                   "--importance", importance, "--recover", recover, "--mean-batches",
                   str(args.mean_batches), "--data", args.data, "--out", str(out)], log)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--model", default="resnet20")
    p.add_argument("--init", default=None, help="pretrained model (default: the shared "
                   "CIFAR-10 ResNet-20 for resnet20; otherwise one is trained first)")
    p.add_argument("--pretrain-epochs", type=float, default=10,
                   help="only without --init: epochs of the standard model trained first")
    p.add_argument("--ratio", type=float, default=0.5, help="fraction of channels removed")
    p.add_argument("--epochs", type=float, default=3,
                   help="budget: pof's training from the pretrained model = TP's fine-tuning")
    p.add_argument("--lr", type=float, default=0.05, help="pof's training lr")
    p.add_argument("--ft-lr", type=float, default=0.01, help="TP's fine-tuning lr")
    p.add_argument("--penalty-weight", type=float, default=20)
    p.add_argument("--mean-batches", type=int, default=10)
    p.add_argument("--max-steps", type=int, default=None, help="cap every training run "
                   "(a smoke test; the numbers are then meaningless)")
    p.add_argument("--threads", type=int, default=1, help="latency threads")
    p.add_argument("--latency-batches", default="1,64")
    p.add_argument("--out", default="runs/structured")
    p.add_argument("--results", default=None,
                   help="markdown to write (default: OUT/structured.md)")
    args = p.parse_args(argv)
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    cap = ["--max-steps", str(args.max_steps)] if args.max_steps else []
    base = ["--model", args.model, "--data", args.data, "--seed", "0", "--workers", "0"]

    init = args.init or (str(DEFAULT_INIT) if args.model == "resnet20" and DEFAULT_INIT.exists()
                         else None)
    if init is None:
        init = str(train(out / "pretrained", base + ["--epochs", str(args.pretrain_epochs),
                                                    "--warmup-epochs", "0.5", *cap], log))
    pre = Path(init)
    res = {"dense": top1(pre, args.data, log)}

    pof_run = train(out / "pof", base + [
        "--init", str(pre), "--penalty", "pof", "--structure", "channel",
        "--sparsity", str(args.ratio), "--epochs", str(args.epochs), "--lr", str(args.lr),
        "--penalty-weight", str(args.penalty_weight), "--penalty-warmup", "0.5", *cap], log)
    res["pof trained, dense"] = top1(pof_run, args.data, log)
    for rec in ("mean", "zero"):
        res[f"pof, channels pruned ({rec})"] = top1(
            prune(pof_run, out / f"pof-{rec}", args, "pof", rec, log), args.data, log)
    tp0 = prune(pre, out / "tp-magnitude", args, "magnitude", "zero", log)
    res["Torch-Pruning magnitude, no fine-tuning"] = top1(tp0, args.data, log)
    ft = out / "tp-magnitude-ft"
    if not (ft / "final.safetensors").exists():
        run(POF + ["finetune", str(tp0), "--epochs", str(args.epochs), "--lr", str(args.ft_lr),
                   "--out", str(ft), "--progress", "false", "--workers", "0", *cap]
            + (["--resume"] if (ft / "last.safetensors").exists() else []), log)
    ft_ckpt = ft / "final.safetensors"
    res["Torch-Pruning magnitude, fine-tuned"] = top1(
        ft_ckpt if ft_ckpt.exists() else ft / "last.safetensors", args.data, log)
    onnx = out / "pof-mean" / "model.onnx"
    if not onnx.exists():
        run(POF + ["export", str(out / "pof-mean" / "pruned.safetensors"), "--format", "onnx",
                   "--out", str(onnx)], log)
    lat = out / "latency.md"
    if not lat.exists():
        run([sys.executable, "bench/latency.py", "--models", args.model, "--batches",
             args.latency_batches, "--threads", str(args.threads), "--channels",
             str(args.ratio), "--out", str(lat)], log)
    (out / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    lines = [f"# Structured pof: {args.model}, {100 * args.ratio:g}% of channels removed", "",
             f"Command: `python bench/structured.py {shlex.join(argv or sys.argv[1:])}`; "
             f"every command it ran is in `{log.name}`.", "",
             "| arm | top-1 % | vs dense |", "|---|---:|---:|"]
    lines += [f"| {k} | {v:.2f} | {v - res['dense']:+.2f} |" for k, v in res.items()]
    epochs = (out / "pof" / "metrics.jsonl").read_text().splitlines()
    last = json.loads(epochs[-1]) if epochs else {}  # none when --max-steps cut it short
    lines += ["", f"pof's pruned-energy fraction at the end of training: "
              f"{last.get('pruned_energy', float('nan')):.2e} (what the channel prune removes; "
              "it must be near 0 for a lossless prune)."]
    lines += ["", "Latency (random weights; the widths are what matter):", "",
              lat.read_text().split("\n", 2)[2]]
    results = Path(args.results) if args.results else out / "structured.md"
    results.write_text("\n".join(lines))
    print("\n".join(lines[:len(res) + 8]))
    print(f"wrote {results}")


if __name__ == "__main__":
    main()
