"""Running and archiving bench commands: the helpers every CIFAR bench script shares.

A command is printed before it runs and logged with its wall time, machine and torch
version in a ``commands.jsonl``; a training writing to a folder that holds
``final.safetensors`` is skipped, a killed one continues with ``--resume``. A finished
run's small files and its lines of the log are archived under docs/results/, and pages
get generated tables between ``<!-- begin X -->`` / ``<!-- end X -->`` markers.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PRETRAINED = SHARED / "pretrained" / "cifar10-resnet20-standard-e30-s0.safetensors"
DATA = SHARED / "data" / "cifar10"


def flags(opts: dict[str, str]) -> list[str]:
    """``{"epochs": "4"}`` -> ``["--epochs", "4"]``."""
    return [x for k, v in opts.items() for x in (f"--{k}", v)]


def run(cmd: list[str], log: Path) -> None:
    """Run ``cmd`` (printed first) and append it and its wall time to ``log``."""
    print("$ " + shlex.join(cmd), flush=True)
    t = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT)
    import torch

    with open(log, "a") as f:
        f.write(json.dumps({"cmd": shlex.join(cmd), "wall_s": round(time.time() - t, 1),
                            "host": host(), "torch": torch.__version__,
                            "threads": os.environ.get("OMP_NUM_THREADS")}) + "\n")


def host() -> str:
    """The machine in a few words: CPU model and cores, and the GPU when there is one."""
    import torch

    from pof.machine import machine

    gpu = ""
    if torch.cuda.is_available():  # the name without opening a CUDA context here
        gpu = ", CUDA GPU"
        for info in Path("/proc/driver/nvidia/gpus").glob("*/information"):
            gpu = ", " + next((ln.split(":", 1)[1].strip() for ln in
                               info.read_text().splitlines() if ln.startswith("Model")),
                              "CUDA GPU")
            break
    return machine() + gpu


def portable(arg: str) -> str:
    """A path as seen from the project root, wherever the project was when the command ran
    (``/tmp/w/pof/runs/x`` -> ``runs/x``, ``/x/shared/data`` -> ``../shared/data``)."""
    if not arg.startswith(os.sep):
        return arg
    if arg.startswith((str(ROOT) + os.sep, str(ROOT.parent / "shared") + os.sep)):
        return os.path.relpath(arg, ROOT)  # the project and ../shared, here
    marks = {"/shared/": "../shared/", "/runs/": "runs/", "/recipes/": "recipes/",
             "/docs/": "docs/"}
    found = [(arg.find(m), m) for m in marks if m in arg]
    if not found:
        return arg
    at, mark = min(found)  # the first one: /tmp/w/pof/runs/shared/x is a run folder
    return marks[mark] + arg[at + len(mark):]


def shown(cmd: list[str]) -> str:
    """A ``pof(...)`` command as a user types it: ``pof ...``, paths from the project root."""
    return shlex.join(["pof", *map(portable, cmd[3:])])


def pof(*args: str) -> list[str]:
    """A ``pof`` command run with this interpreter."""
    return [sys.executable, "-m", "pof", *args]


def train_once(cmd: list[str], out: Path, log: Path) -> Path:
    """Run a ``pof train``/``finetune`` command writing to ``out`` unless it has finished
    (``out/final.safetensors``); a killed one continues with ``--resume``."""
    if not (out / "final.safetensors").is_file():
        resume = ["--resume"] if (out / "last.safetensors").is_file() else []
        run([*cmd, "--out", str(out), *resume], log)
    return out / "final.safetensors"


def ran(cmd: str, run_name: str) -> bool:
    """Whether a logged command worked on the run folder ``run_name`` (e.g. pof-range-s1)."""
    return re.search(rf"/{re.escape(run_name)}(/|\s|$)", cmd) is not None


def append_new(log: Path, archive: Path, keep=lambda cmd: True) -> None:
    """Append to ``archive`` the lines of the commands log ``log`` whose command ``keep``
    accepts and that it does not hold yet."""
    have = set(archive.read_text().splitlines()) if archive.is_file() else set()
    new = [line for line in log.read_text().splitlines()
           if line not in have and keep(json.loads(line)["cmd"])]
    archive.parent.mkdir(parents=True, exist_ok=True)
    with open(archive, "a") as f:
        f.writelines(line + "\n" for line in new)


def archive_commands(log: Path, archive: Path, run_name: str) -> None:
    """Append the logged commands of one run to the archived log (each line once)."""
    append_new(log, archive, lambda cmd: ran(cmd, run_name))


# ---------------------------------------------------------------- kept checkpoints


def inject(page: Path, block: str, text: str) -> None:
    """Replace what lies between ``<!-- begin BLOCK -->`` and ``<!-- end BLOCK -->`` in a
    hand-written page with generated text (the page keeps its prose around it)."""
    from pof.fileio import write_text

    begin, end = f"<!-- begin {block} -->", f"<!-- end {block} -->"
    if not page.is_file():
        return
    src = page.read_text()
    if begin not in src:
        return
    if src.count(begin) != 1 or src.count(end) != 1 or src.index(end) < src.index(begin):
        sys.exit(f"{page}: the block {block!r} needs one begin and one end marker, in order")
    head, _, rest = src.partition(begin)
    _, _, tail = rest.partition(end)
    write_text(page, f"{head}{begin}\n{text}\n{end}{tail}")


def out_of(cmd: str) -> Path:
    """The ``--out`` folder of a logged command (empty path if it has none)."""
    args = shlex.split(cmd)
    return Path(args[args.index("--out") + 1]) if "--out" in args[:-1] else Path()


def last_top1(run_dir: Path) -> float:
    """Test top-1 % at the end of a run (its last metrics line)."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return 100 * json.loads(lines[-1])["test_top1"]
