"""Hostile inputs: crafted checkpoint metadata, full or unwritable disks, a binary config.

Each case runs ``pof ...`` in its own process (an address-space limit as a safety net)
and is counted as handled when it ends with exit code 2 and one line on stderr, leaves
nothing new (or changed) in its output folder and inputs, and peaks under 1 GiB of
resident memory (``wait4``'s ``ru_maxrss``). A full disk or a read-only/denied place is
simulated in the child by a write wrapper (:func:`install_disk_fault`: ``open`` and
safetensors' writer raise the OS error under the output folder), no root tricks.

    python bench/hostile_inputs.py            # writes docs/results/hostile_inputs.md

The case table (:func:`metadata_cases`, :func:`write_cases`) is shared with
``tests/test_hostile.py``, which runs the same cases in-process.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "docs" / "results" / "hostile_inputs.md"
PEAK_LIMIT = 2**30  # bytes of resident memory a crafted file may cost
AS_LIMIT = 8 * 2**30  # the child's address-space limit: a missed check fails, not swaps
ARCH = {"name": "small_cnn", "num_classes": 10, "kwargs": {"width": 4}}
CONV = {"in": 1, "out": 4, "groups": 1, "bias": False}
FAULTS = {"ENOSPC": errno.ENOSPC, "EROFS": errno.EROFS, "EACCES": errno.EACCES,
          "ENOENT": errno.ENOENT, "ENOSPC-at-checkpoint": errno.ENOSPC}

Edit = Callable[[dict], Any]
TRAIN = ["train", "--data", "digits", "--model", "small_cnn", "--epochs", "1", "--progress",
         "false"]


def _set(path: str, value: Any) -> Edit:
    """An edit that sets ``meta[a][b]...`` (``path`` "a.b") to ``value``."""
    keys = path.split(".")

    def edit(meta: dict) -> Any:
        d = meta
        for k in keys[:-1]:
            d[k] = dict(d.get(k) or {}) if isinstance(d.get(k), dict | None) else {}
            d = d[k]
        d[keys[-1]] = value
        return meta

    return edit


# the files (36 GB widths, a 6.4 GB image size, strings / an empty list as a
# sparsity range), run through every command that reads a checkpoint; the others by one
MEMORY = ["kwargs-width-4gb", "widths-huge", "widths-36gb", "image-huge", "image-negative",
          "image-str", "config-sparsity-str", "config-sparsity-empty", "compact-huge"]


def _group(meta: dict, **values: Any) -> dict:
    """``meta`` with ``values`` set in its optimizer's first parameter group."""
    groups = meta["optimizer"]["param_groups"]
    return {**meta, "optimizer": {**meta["optimizer"],
                                  "param_groups": [{**groups[0], **values}, *groups[1:]]}}


def metadata_cases() -> list[tuple[str, str, Edit]]:
    """``(id, base, edit)``: a crafted copy of checkpoint ``base`` ("ok": a saved model,
    "run": a training run's ``last.safetensors``) for every key the reader accepts."""
    big = 10**6
    cases: list[tuple[str, str, Any, Any]] = [
        ("meta-list", "ok", None, lambda m: [m]),
        ("format-int", "ok", "format", 2), ("format-newer", "ok", "format", "pof-checkpoint/9"),
        ("sha256-int", "ok", "sha256", 5),
        ("step-negative", "ok", "step", -1), ("step-str", "ok", "step", "3"),
        ("epoch-negative", "ok", "epoch", -1.0), ("epoch-nan", "ok", "epoch", math.nan),
        ("penalty-calls-negative", "run", "penalty_calls", -5),
        ("epoch-sums-list", "run", "epoch_sums", []),
        ("epoch-sums-str", "run", "epoch_sums", {"loss": "x"}),
        ("schedule-list", "run", "schedule", []),
        ("schedule-nested", "run", "schedule", {"last_epoch": {"a": 1}}),
        ("optimizer-list", "run", "optimizer", []),
        ("optimizer-groups-str", "run", "optimizer", {"param_groups": "x", "state": {}}),
        ("optimizer-param-negative", "run", "optimizer",
         {"param_groups": [{"params": [-1]}], "state": {}}),
        ("optimizer-state-key", "run", "optimizer", {"param_groups": [], "state": {"x": {}}}),
        ("optimizer-groups-empty", "run", "optimizer", {"param_groups": [], "state": {}}),
        ("optimizer-params-short", "run", None, lambda m: _group(m, params=[0])),
        ("optimizer-lr-str", "run", None, lambda m: _group(m, lr="x")),
        ("optimizer-momentum-negative", "run", None, lambda m: _group(m, momentum=-1)),
        ("schedule-lrs-str", "run", "schedule.base_lrs", "x"),
        ("schedule-lrs-two", "run", "schedule.base_lrs", [0.1, 0.1]),
        ("schedule-step-str", "run", "schedule.last_epoch", "x"),
        ("step-huge", "run", "step", 10**30),
        ("method-int", "run", "method", 5), ("method-state-list", "run", "method_state", []),
        ("arch-str", "ok", "arch", "small_cnn"), ("arch-name-int", "ok", "arch.name", 5),
        ("arch-unknown", "ok", "arch.name", "nope"),
        ("classes-negative", "ok", "arch.num_classes", -5),
        ("classes-str", "ok", "arch.num_classes", "10"),
        ("classes-huge", "ok", "arch.num_classes", 10**9),
        ("kwargs-str", "ok", "arch.kwargs", "x"),
        ("kwargs-width-huge", "ok", "arch.kwargs", {"width": 100000}),
        ("kwargs-width-4gb", "ok", "arch.kwargs", {"width": 3000}),  # 4.5 GB < MAX_PARAMS
        ("kwargs-width-negative", "ok", "arch.kwargs", {"width": -1}),
        ("kwargs-channels-huge", "ok", "arch.kwargs", {"width": 4, "in_channels": big}),
        ("kwargs-nested", "ok", "arch.kwargs", {"width": {"a": 1}}),
        ("data-str", "ok", "data", "x"), ("data-source-int", "ok", "data.source", 5),
        ("data-mean-str", "ok", "data.mean", "x"),
        ("data-std-zero", "ok", "data", {"source": "digits", "mean": [0.1], "std": [0]}),
        ("data-mean-lengths", "ok", "data", {"source": "digits", "mean": [1, 2], "std": [1]}),
        ("data-mean-channels", "ok", "data", {"source": "digits", "mean": [0.1, 0.2, 0.3],
                                               "std": [1, 1, 1], "image_size": [1, 8, 8]}),
        ("data-classes-int", "ok", "data.classes", 5),
        ("image-negative", "ok", "data.image_size", [-1, 8, 8]),
        ("image-str", "ok", "data.image_size", ["1", "8", "8"]),
        ("image-zero", "ok", "data.image_size", [1, 0, 8]),
        ("image-two", "ok", "data.image_size", [1, 8]),
        ("image-huge", "ok", "data.image_size", [1, 40000, 40000]),
        ("image-channels", "ok", "data.image_size", [big, 8, 8]),
        ("image-wrong-channels", "ok", "data.image_size", [3, 8, 8]),
        ("config-str", "ok", "config", "x"),
        ("config-sparsity-str", "ok", "config.sparsity", ["0.3", "0.9"]),
        ("config-sparsity-empty", "ok", "config.sparsity", []),
        ("config-sparsity-order", "ok", "config.sparsity", [0.9, 0.3]),
        ("config-sparsity-one", "ok", "config.sparsity", 1.5),
        ("config-sparsity-three", "ok", "config.sparsity", [0.1, 0.2, 0.3]),
        ("config-epochs-str", "ok", "config.epochs", "ten"),
        ("config-lr-negative", "ok", "config.lr", -1),
        ("pruned-str", "ok", "pruned", "x"),
        ("pruned-sparsity-str", "ok", "pruned.sparsity", "0.5"),
        ("pruned-sparsity-7", "ok", "pruned.sparsity", 7),
        ("pruned-bn-negative", "ok", "pruned.bn_recal_batches", -1),
        ("compact-list", "ok", "compact", []),
        ("compact-huge", "ok", "compact", {"fc.weight": [[big, big], "float32"]}),
        ("compact-negative", "ok", "compact", {"fc.weight": [[-1], "float32"]}),
        ("compact-dtype", "ok", "compact", {"fc.weight": [[10, 4], "int8"]}),
        ("structure-list", "ok", "structure", []),
        ("structure-unknown-layer", "ok", "structure", {"nope": {}}),
        ("structure-bad-mask", "ok", "structure", {"fc": {"weight": [{"mask": "evil"}]}}),
        ("structure-entry-str", "ok", "structure", {"fc": "x"}),
        ("widths-list", "ok", "widths", []),
        ("widths-unknown-layer", "ok", "widths", {"nope": CONV}),
        ("widths-huge", "ok", "widths", {"features.0.0": {**CONV, "out": 100000},
                                         "features.0.1": {"features": 100000}}),
        ("widths-36gb", "ok", "widths", {"features.1.0": {**CONV, "in": 4, "out": 4},
                                         "fc": {"in": 10**9, "out": 10, "bias": True}}),
        ("widths-str", "ok", "widths", {"features.0.0": {**CONV, "out": "4"}}),
        ("widths-zero", "ok", "widths", {"features.0.0": {**CONV, "out": 0}}),
        ("widths-groups", "ok", "widths", {"features.1.0": {"in": 4, "out": 4, "groups": 3,
                                                            "bias": False}}),
        ("selection-list", "ok", "selection", []),
        ("selection-include-int", "ok", "selection", {"include": 5}),
    ]
    return [(cid, base, edit if key is None else _set(key, edit))
            for cid, base, key, edit in cases]


# ---------------------------------------------------------------- files
def craft(src: Path, dest: Path, edit: Edit) -> Path:
    """A copy of checkpoint ``src`` whose JSON metadata ``edit`` rewrote (tensors kept)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), "pt") as f:
        meta = json.loads(f.metadata()["pof"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open API
    save_file(tensors, str(dest), metadata={"pof": json.dumps(edit(meta))})
    return dest


def make_inputs(d: Path) -> dict[str, Path]:
    """The base files: ``ok`` (a small_cnn checkpoint with every metadata key a pruned
    checkpoint has), ``nobn`` (no BatchNorm), ``ok_channels`` (channels removed), ``run``
    (a two-step training run), ``binary`` (a binary file)."""
    import torch

    import pof
    from pof.cli import main
    from pof.training.checkpoint import save_checkpoint

    d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    data = {"source": "digits", "mean": [0.3], "std": [0.37], "image_size": [1, 8, 8],
            "classes": [str(i) for i in range(10)]}
    model = pof.prune(pof.to_sphere(pof.create_model("small_cnn", width=4)), 0.5)
    meta = {"arch": ARCH, "data": data, "step": 3, "epoch": 1.0,
            "config": {"model": "small_cnn", "epochs": 1, "sparsity": 0.5, "lr": 0.1},
            "pruned": {"sparsity": 0.5, "recover": "zero", "bn_recal_batches": 0}}
    p = {"ok": save_checkpoint(d / "ok.safetensors", model, meta)}
    nobn = pof.create_model("small_cnn", width=4, norm=False)
    p["nobn"] = save_checkpoint(d / "nobn.safetensors", nobn, {
        **meta, "arch": {**ARCH, "kwargs": {"width": 4, "norm": False}}, "pruned": {}})
    chan = pof.create_model("small_cnn", width=4)
    pof.remove_channels(pof.prune_channels(chan, 0.5, torch.zeros(1, 1, 8, 8)))
    p["ok_channels"] = save_checkpoint(d / "channels.safetensors", chan,
                                       {**meta, "pruned": {}})
    run = d / "run"
    with open(os.devnull, "w") as null:
        import contextlib

        with contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
            assert main([*TRAIN, "--max-steps", "2", "--out", str(run)]) == 0
    p["run"] = run
    (d / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    p["binary"] = d / "binary.yaml"
    return p


def _commands(ckpt: str, out: str, base: str) -> list[tuple[str, list[str]]]:
    """The commands that read a crafted checkpoint of ``base``."""
    if base == "run":
        return [("train-resume", [*TRAIN, "--out", ckpt, "--resume"])]
    return [("eval", ["eval", ckpt, "--data", "digits"]),
            ("prune-channel", ["prune", ckpt, "--structure", "channel", "--sparsity", "0.5",
                               "--recover", "zero", "--out", f"{out}/p", "--no-eval"]),
            ("export-onnx", ["export", ckpt, "--format", "onnx", "--out", f"{out}/m.onnx"]),
            ("finetune", ["finetune", ckpt, "--data", "digits", "--epochs", "1",
                          "--out", f"{out}/f"]),
            ("train-init", ["train", "--data", "digits", "--model", "small_cnn", "--epochs",
                            "1", "--init", ckpt, "--out", f"{out}/t"]),
            ("sweep", ["sweep", "{ok}", ckpt, "--data", "digits", "--sparsities", "0.5",
                       "--out", f"{out}/s"])]




def write_cases() -> list[tuple[str, str, list[str]]]:
    """``(id, fault, argv)``: every write path under a full, read-only or denied disk
    (``{out}`` the output folder, ``{run}`` a copy of a stopped run, ``{ok}`` a checkpoint),
    plus an unwritable place and a binary config."""
    cmds = {
        "train": [*TRAIN, "--out", "{out}/r"],
        "train-range": [*TRAIN, "--penalty", "pof", "--sparsity", "0.3:0.9", "--out",
                        "{out}/r"],
        "resume": [*TRAIN, "--out", "{run}", "--resume"],
        "prune": ["prune", "{ok}", "--sparsity", "0.5", "--out", "{out}/p", "--no-eval"],
        "finetune": ["finetune", "{ok}", "--data", "digits", "--epochs", "1",
                     "--out", "{out}/f"],
        "export": ["export", "{ok}", "--out", "{out}/x.safetensors"],
        "export-onnx": ["export", "{ok}", "--format", "onnx", "--out", "{out}/x.onnx"],
        "sweep": ["sweep", "{ok}", "--data", "digits", "--sparsities", "0.5", "--out",
                  "{out}/s"],
        "demo": ["demo", "--quick", "--out", "{out}/d"],
    }
    cases = [(f"{name}-{fault.lower()}", fault, argv) for fault in FAULTS
             for name, argv in cmds.items()
             if not fault.endswith("checkpoint") or name in ("train", "train-range", "resume",
                                                             "finetune", "prune", "export")]
    cases += [(f"{name}-proc", "", [*argv[:-1], "/proc/pof-x"] if name != "resume" else argv)
              for name, argv in cmds.items() if name in ("train", "export", "demo")]
    cases.append(("config-binary", "", ["train", "--config", "{binary}", "--out", "{out}/r"]))
    return cases


def install_disk_fault(root: str, fault: str) -> None:
    """Make every write under ``root`` fail with ``fault``'s OS error (ENOSPC: after half
    the bytes, as a full disk does; others: at open), in this process;
    ``ENOSPC-at-checkpoint``: only checkpoint writes (the disk fills during training)."""
    import builtins

    import safetensors
    from safetensors import SafetensorError

    import pof.training.checkpoint as ckpt

    real_open, real_save = builtins.open, ckpt.save_file
    code = FAULTS[fault]
    msg = os.strerror(code)

    def under(path: Any) -> bool:
        return isinstance(path, str | os.PathLike) and os.path.abspath(path).startswith(root)

    class Full:
        def __init__(self, f) -> None:
            self.f = f

        def write(self, b):
            self.f.write(b[: len(b) // 2])
            raise OSError(code, msg)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    def fault_open(file, mode="r", *a, **k):
        if under(file) and any(c in mode for c in "wax+"):
            if code != errno.ENOSPC:
                raise OSError(code, msg, str(file))
            return Full(real_open(file, mode, *a, **k))
        return real_open(file, mode, *a, **k)

    def fault_save(tensors, filename, metadata=None):
        if under(filename):
            if code == errno.ENOSPC:
                real_save(tensors, filename, metadata)
                with real_open(filename, "r+b") as f:
                    f.truncate(os.path.getsize(filename) // 2)
            raise SafetensorError(f"Error while serializing: I/O error: {msg} (os error "
                                  f"{code})")
        return real_save(tensors, filename, metadata)

    if not fault.endswith("checkpoint"):
        builtins.open = fault_open
    ckpt.save_file = fault_save
    del safetensors


# ---------------------------------------------------------------- running
CHILD = """
import sys
if {fault!r}:
    import hostile_inputs
    hostile_inputs.install_disk_fault({root!r}, {fault!r})
from pof.cli import main
sys.exit(main({argv!r}))
"""


def _tree(*roots: Path) -> dict[str, str]:
    """Every path under ``roots`` with its content's hash (folders: "")."""
    import hashlib

    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
            for r in roots if r.exists() for p in [r, *r.rglob("*")]}


def run_case(argv: list[str], out: Path, watched: list[Path], fault: str = ""
             ) -> dict[str, Any]:
    """Run ``pof argv`` in a child; its exit code, stderr lines, whether it left its output
    folder and ``watched`` as they were, and its peak resident memory."""
    import resource

    before = _tree(out, *watched)
    src = CHILD.format(fault=fault, root=str(out), argv=argv)
    path = os.pathsep.join(filter(None, [str(ROOT / "bench"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))

    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-c", src], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env, preexec_fn=limit)
    err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    return {"rc": proc.returncode, "lines": lines, "one_line": len(lines) == 1
            and "Traceback" not in err, "left": _tree(out, *watched) != before,
            "peak": usage.ru_maxrss * 1024, "s": time.time() - t0}


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="pof-hostile-"))
    os.environ["POF_CACHE"] = str(work / "cache")
    files = make_inputs(work / "in")
    rows = []
    for cid, base, edit in metadata_cases():
        for name, argv in _commands("{ckpt}", "{out}", base)[:None if cid in MEMORY else 1]:
            out = work / "out" / f"{cid}-{name}"
            out.mkdir(parents=True)
            if base == "run":
                ckpt = work / "runs" / cid
                if not ckpt.exists():
                    shutil.copytree(files["run"], ckpt)
                    craft(files["run"] / "last.safetensors", ckpt / "last.safetensors", edit)
                watched = [ckpt]
            else:
                ckpt = work / "in" / f"{cid}.safetensors"
                if not ckpt.exists():
                    craft(files["ok"], ckpt, edit)
                watched = [work / "in"]
            args = [a.format(ckpt=ckpt, out=out, ok=files["ok"]) for a in argv]
            rows.append((f"{cid} / {name}", run_case(args, out, watched)))
            print(rows[-1][0], rows[-1][1]["rc"], rows[-1][1]["lines"][-1:], flush=True)
    for cid, fault, argv in write_cases():
        out = work / "out" / cid
        out.mkdir(parents=True)
        run = work / "runs" / f"w-{cid}"
        shutil.copytree(files["run"], run)
        args = [a.format(out=out, run=run, ok=files["ok"], binary=files["binary"])
                for a in argv]
        root = run if "{run}" in " ".join(argv) else out
        rows.append((cid, run_case(args, root, [work / "in", run], fault)))
        print(rows[-1][0], rows[-1][1]["rc"], rows[-1][1]["lines"][-1:], flush=True)
    write_report(rows, str(work))
    shutil.rmtree(work, ignore_errors=True)


def write_report(rows: list[tuple[str, dict]], work: str) -> None:
    """``docs/results/hostile_inputs.md``: the counts, what was not handled, every case."""
    ok = [r for _, r in rows if r["rc"] == 2 and r["one_line"] and not r["left"]]
    low = [r for _, r in rows if r["peak"] < PEAK_LIMIT]
    bad = [(n, r) for n, r in rows if not (r["rc"] == 2 and r["one_line"] and not r["left"]
                                          and r["peak"] < PEAK_LIMIT)]
    peak = max(r["peak"] for _, r in rows)
    lines = [
        "# Hostile inputs", "",
        "Crafted checkpoint metadata (every key the reader accepts), full / read-only / "
        "denied disks (a write wrapper raising ENOSPC, EROFS, EACCES, ENOENT), an "
        "unwritable place (`/proc/...`) and a binary `--config`, each run as `pof ...` in "
        "its own process by `bench/hostile_inputs.py`.", "",
        "| measure | count |", "|---|---|",
        f"| cases tried | {len(rows)} |",
        f"| exit 2, one line on stderr, nothing new or changed left | {len(ok)} |",
        f"| peak resident memory under 1 GiB | {len(low)} |",
        f"| largest peak | {peak / 2**20:.0f} MiB |", "",
        "Peak memory is the child's `ru_maxrss` (`os.wait4`), importing torch included "
        "(about 290 MiB); `$TMP` is the bench's temporary folder.", "",
    ]
    if bad:
        lines += ["Not handled:", ""] + [
            f"- {n}: exit {r['rc']}, {len(r['lines'])} lines, left {r['left']}, "
            f"{r['peak'] / 2**20:.0f} MiB: {(r['lines'] or [''])[-1][:160]}" for n, r in bad]
    lines += ["", "| case | exit | peak MiB | message |", "|---|---|---|---|"]
    lines += [f"| {n} | {r['rc']} | {r['peak'] / 2**20:.0f} | "
              f"{(r['lines'] or [''])[-1][:120].replace('|', '/')} |" for n, r in rows]
    RESULT.write_text("\n".join(lines).replace(work, "$TMP") + "\n")
    print(f"wrote {RESULT}: {len(ok)}/{len(rows)} handled, peak {peak / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
