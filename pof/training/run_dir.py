"""A run's folder: checked before any work, written only once the run has started, and
left as it was when the start fails. Holds ``config.yaml`` and ``metrics.jsonl``."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import PofError
from ..fileio import atomic_write, write_text


def check_out_dir(out: str | os.PathLike, what: str = "--out") -> Path:
    """``out`` as a Path if it is (or can be made) a writable folder; else a PofError.

    Nothing is created: the nearest existing ancestor must be a writable folder.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise PofError(f"{what} {path} is an existing file, not a folder")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise PofError(f"{what} {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PofError(f"{what} {path}: folder {probe} is not writable")
    return path


def check_out_file(out: str | os.PathLike, what: str = "--out") -> Path:
    """``out`` as a Path if a file can be written there (not a folder, folder writable)."""
    path = Path(out)
    if path.is_dir():
        raise PofError(f"{what} {path} is a folder; give a file name (e.g. model.safetensors)")
    check_out_dir(path.parent, what)
    return path


class Created:
    """Remember what did not exist yet under ``folder`` (the folder itself, or the files
    ``names`` in it), to remove it again if the work that writes them fails."""

    def __init__(self, folder: Path, names: tuple[str, ...] = ()) -> None:
        self.first_new = next((p for p in [*reversed(folder.parents), folder]
                               if not p.exists()), None)
        self.files = [folder / n for n in names if not (folder / n).exists()]

    def undo(self) -> None:
        for f in self.files:
            f.unlink(missing_ok=True)
        if self.first_new is not None:
            shutil.rmtree(self.first_new, ignore_errors=True)


def write_error(e: OSError, folder: Path) -> PofError:
    """One line for an OS error while writing under ``folder``: the path and the cause."""
    where = e.filename if e.filename else folder
    return PofError(f"cannot write {where}: {e.strerror or e}")


@contextmanager
def outputs(folder: Path, *names: str) -> Iterator[Path]:
    """Run the block that writes ``names`` into ``folder``; if it fails, remove what it
    created (the folder if it was new, else the files that were new). An OS error (a full
    disk, a read-only or missing place) becomes a one-line PofError naming the path."""
    created = Created(folder, names)
    try:
        yield folder
    except OSError as e:
        created.undo()
        raise write_error(e, folder) from None
    except BaseException:
        created.undo()
        raise


RUN_RECORDS = ("config.yaml", "metrics.jsonl")  # what a run rewrites before a checkpoint


def _stamp(path: Path) -> tuple[int, int] | None:
    return (path.stat().st_mtime_ns, path.stat().st_size) if path.is_file() else None


@contextmanager
def run_outputs(folder: Path) -> Iterator[Path]:
    """Run a training run that writes into ``folder``. If it fails before writing a
    checkpoint (``last.safetensors`` as it was), leave the folder as it was: remove what
    was new (the folder itself if it was), restore ``config.yaml`` and ``metrics.jsonl``.
    A run that wrote a checkpoint keeps everything, to ``--resume``."""
    created = Created(folder)
    before = set(folder.iterdir()) if folder.is_dir() else set()
    records = {n: (folder / n).read_bytes() for n in RUN_RECORDS if (folder / n).is_file()}
    last = _stamp(folder / "last.safetensors")
    try:
        yield folder
    except BaseException as e:
        if _stamp(folder / "last.safetensors") == last:
            created.undo()
            for p in set(folder.iterdir()) - before if folder.is_dir() else ():
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            for name, data in records.items():
                if (folder / name).read_bytes() != data:
                    with contextlib.suppress(PofError):  # a full disk: it stays as it is
                        atomic_write(folder / name, lambda f, data=data: f.write(data))
        if isinstance(e, OSError):
            raise write_error(e, folder) from None
        raise


def write_config(folder: Path, config: dict[str, Any]) -> Path:
    """``config.yaml`` (atomic)."""
    import yaml

    return write_text(folder / "config.yaml", yaml.safe_dump(config))


def read_metrics(path: Path, up_to_step: int, log=print) -> list[dict]:
    """Records of ``metrics.jsonl`` up to ``up_to_step``, less the record of a stop (a
    resumed run writes its own); a torn last line (a kill during the write) is dropped and
    said so, any other damage names the file."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
                raise ValueError("not a metrics record")
        except ValueError:
            if i == len(lines) - 1:
                log(f"pof: {path}: dropped a torn last line (the run was killed mid-write)")
                continue
            raise PofError(f"{path}: line {i + 1} is not a metrics record; fix or remove "
                           "the file") from None
        out.append(rec)
    # a record written at a --max-steps stop is superseded by the resumed run's own
    return [r for r in out if r["step"] <= up_to_step and not r.get("stopped")]


def write_metrics(path: Path, records: list[dict]) -> None:
    """Rewrite ``metrics.jsonl`` with ``records`` (atomic)."""
    write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def append_metrics(path: Path, record: dict) -> None:
    """Append one record to ``metrics.jsonl`` (an OS error is a one-line PofError)."""
    try:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        raise write_error(e, path.parent) from None
