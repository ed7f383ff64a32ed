"""The one data rule every deploy step follows: the data a user names wins; else the data
a checkpoint records, used only when it is here and is the same data."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import CheckpointError, PofError


def data_source(args: argparse.Namespace, meta: dict, ckpt: str, cmd: str,
                 required: bool = True) -> str | None:
    """The one data rule of every command: ``--data`` wins; else the data the checkpoint
    records, used only when it is here and is the same data (classes, image size,
    statistics: :func:`pof.data.provenance.data_difference`), said so in one line. Without
    either: a PofError, or None when not ``required``. Decided once per checkpoint."""
    memo = vars(args).setdefault("_data_memo", {})
    if str(ckpt) not in memo:
        memo[str(ckpt)] = _pick_data(args, meta, ckpt, cmd, required)
    return memo[str(ckpt)]


def _pick_data(args: argparse.Namespace, meta: dict, ckpt: str, cmd: str,
               required: bool) -> str | None:
    from ..data import load_dataset
    from ..data.load import is_builtin
    from ..data.provenance import data_difference, resolved, spec_summary

    if getattr(args, "data", None):
        return args.data
    rec = meta.get("data") or {}
    src = rec.get("source")
    if not isinstance(src, str) or not src:
        if not required:
            return None
        raise PofError(f"{ckpt}: no --data given and the checkpoint does not name its data; "
                       "pass --data PATH")
    if not is_builtin(src) and not Path(src).expanduser().exists():
        if not required:
            note(f"pof {cmd}: {ckpt} was trained on {src}, which is not there from here "
                  "(--data PATH to use another copy)")
            return None
        raise PofError(f"{ckpt} was trained on {src}, which is not there from here; "
                       "pass --data PATH")
    diff = data_difference(rec, spec_summary(load_dataset(src, "train", progress=True).spec))
    if diff:
        raise PofError(f"{ckpt} was trained on {src}, but the data there now is not the same "
                       f"({diff}); pass --data PATH")
    where, was = resolved(src), rec.get("resolved")
    copy = f", another copy than the recorded {was}" if was and was != where else ""
    note(f"pof {cmd}: data {where} (recorded in {ckpt}{copy}; same classes, image size "
          "and statistics)")
    return where


def note(line: str) -> None:
    """One line about what a command chose (stdout: stderr holds only errors)."""
    print(line)


def data_meta(meta: dict, data: str | None) -> dict:
    """``meta['data']`` with ``data`` (the data a command used) as its source: statistics
    stay the training data's (the model is normalised with them)."""
    from ..data.provenance import resolved

    rec = dict(meta.get("data") or {})
    if data is not None:
        rec["source"] = rec["resolved"] = resolved(data)
    return rec


def stats(meta: dict, ckpt: str):
    """The training data's per-channel (mean, std) a checkpoint records, or None."""
    data = meta.get("data") or {}
    if "mean" not in data and "std" not in data:
        return None
    mean, std = data.get("mean"), data.get("std")
    ok = all(isinstance(x, list) and x and len(x) == len(mean) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in x) for x in (mean, std))
    if not ok or min(std) <= 0:
        raise CheckpointError(f"{ckpt}: metadata 'data' mean/std are malformed")
    return tuple(mean), tuple(std)
