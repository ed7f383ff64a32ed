"""Every value a checkpoint's JSON metadata carries, checked in one place before any
tensor is built from it: its type, its sign and a bound.

The bounds come from the file and the architecture: the model the metadata describes
(``arch`` + ``widths``, sized on the meta device) may hold no more values than the file's
own ``model.*`` tensors; channel-pruned widths no larger than the architecture's own
(:mod:`pof.core.widths`); a compact tensor no larger than its bit mask covers; optimizer
groups and LR schedule that match the optimizer tensors and the step; an image size that
the model takes, with activations for one image within :data:`ACTIVATION_FACTOR` times
those at the architecture's own input size (at least :data:`MIN_ACTIVATION_BYTES`).
Anything else is a one-line :class:`CheckpointError`, raised before any tensor exists.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError

FORMAT = "pof-checkpoint/1"
ACTIVATION_FACTOR = 4  # an image size may cost this many times the architecture's own
MIN_ACTIVATION_BYTES = 256 * 2**20  # ... and at least this much, for small models
DTYPES = ("float32", "float16", "bfloat16", "float64")

Shapes = dict[str, list[int]]


def _int(v: Any, lo: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _fraction(v: Any, hi_open: bool = True) -> bool:
    return _num(v) and 0 <= v and (v < 1 if hi_open else v <= 1)


def _str_keys(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) for k in v)


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | bool) or _num(v) or (
        isinstance(v, list) and all(_scalar(x) for x in v))


def _optimizer(v: Any) -> bool:
    """SGD's state as pof saves it: groups of parameter ids 0..n-1 (each once) with
    hyper-parameters >= 0 (flags as booleans), state only for those ids."""
    groups, state = (v.get("param_groups"), v.get("state")) if isinstance(v, dict) else (0, 0)
    if not (isinstance(groups, list) and groups and _str_keys(state)):
        return False
    ids: list[Any] = []
    for g in groups:
        if not (_str_keys(g) and isinstance(g.get("params"), list)):
            return False
        ids += g["params"]
        for k, x in g.items():
            if k in ("lr", "initial_lr", "momentum", "dampening", "weight_decay"):
                if not (_num(x) and x >= 0):
                    return False
            elif k != "params" and not (x is None or isinstance(x, bool | str)):
                return False
    return (all(_int(i) for i in ids) and sorted(ids) == list(range(len(ids)))
            and all(k.isdigit() and int(k) < len(ids) and _str_keys(s)
                    and all(_scalar(x) for x in s.values()) for k, s in state.items()))


def _schedule(v: Any) -> bool:
    """A ``LambdaLR`` state: its step counters and learning rates."""
    kinds = {"base_lrs": "lrs", "_last_lr": "lrs", "last_epoch": -1, "_step_count": 0}
    return _str_keys(v) and all(
        (isinstance(x, list) and all(_num(r) and r >= 0 for r in x)) if kinds.get(k) == "lrs"
        else _int(x, kinds[k]) if k in kinds else _scalar(x) for k, x in v.items())


def _data(v: Any) -> bool:
    if not _str_keys(v):
        return False
    mean, std, size = v.get("mean"), v.get("std"), v.get("image_size")
    return all((
        v.get("source") is None or isinstance(v["source"], str),
        ("mean" not in v and "std" not in v) or (
            isinstance(mean, list) and isinstance(std, list) and 1 <= len(mean) == len(std)
            and all(_num(x) for x in mean) and all(_num(x) and x > 0 for x in std)),
        size is None or (isinstance(size, list) and len(size) == 3
                         and all(_int(s, 1) for s in size)),
        v.get("classes") is None or (isinstance(v["classes"], list)
                                     and all(isinstance(c, str) for c in v["classes"])),
    ))


def _sparsity(v: Any) -> bool:
    """One fraction in [0, 1), or a range: two of them, lo < hi."""
    if isinstance(v, list):
        return len(v) == 2 and all(_fraction(x) for x in v) and v[0] < v[1]
    return _fraction(v)


def _pruned(v: Any) -> bool:
    return _str_keys(v) and all(_scalar(x) for x in v.values()) and (
        v.get("sparsity") is None or _fraction(v["sparsity"], hi_open=False)) and (
        v.get("bn_recal_batches") is None or _int(v["bn_recal_batches"]))


def _compact(v: Any) -> bool:
    return _str_keys(v) and all(
        isinstance(e, list) and len(e) == 2 and isinstance(e[0], list)
        and all(_int(d) for d in e[0]) and e[1] in DTYPES for e in v.values())


def _config(v: Any) -> bool:
    return _str_keys(v) and all(_scalar(x) or _str_keys(x) for x in v.values()) and (
        "sparsity" not in v or _sparsity(v["sparsity"]))


# key -> (what it must be, the check); a key not listed is kept as it is and never read
CHECKS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "format": (f"the string {FORMAT!r}", lambda v: v == FORMAT),
    "sha256": ("64 hex digits", lambda v: isinstance(v, str)
               and re.fullmatch("[0-9a-f]{64}", v) is not None),
    "step": ("a whole number >= 0", _int),
    "epoch": ("a number >= 0", lambda v: _num(v) and v >= 0),
    "penalty_calls": ("a whole number >= 0", _int),
    "epoch_sums": ("a mapping of names to numbers", lambda v: _str_keys(v)
                   and all(_num(x) for x in v.values())),
    "schedule": ("a LambdaLR state: step counts >= 0, learning rates >= 0", _schedule),
    "optimizer": ("{param_groups: [...], state: {...}} of plain values", _optimizer),
    "arch": ("{name, num_classes, kwargs}", lambda v: _str_keys(v) and _str_keys(
        v.get("kwargs", {})) and all(_scalar(x) for x in v.get("kwargs", {}).values())),
    "data": ("{source, mean, std (> 0, as many), image_size [C, H, W] (>= 1), classes}",
             _data),
    "config": ("a mapping of plain values; sparsity one fraction in [0, 1) or two, lo < hi",
               _config),
    "pruned": ("a mapping of plain values; sparsity a fraction in [0, 1]", _pruned),
    "compact": ("{name: [[sizes >= 0], float dtype]}", _compact),
    "method": ("a method name", lambda v: isinstance(v, str)),
    "method_state": ("a mapping of plain values", lambda v: _str_keys(v) and all(
        _scalar(x) or _str_keys(x) for x in v.values())),
    "structure": ("a mapping of layer names", _str_keys),
    "widths": ("a mapping of layer names", _str_keys),
    "selection": ("{include, exclude, keep_first_conv}", _str_keys),
}


def check_meta(path: str | Path, meta: Any, shapes: Shapes) -> dict[str, Any]:
    """``meta`` if every value it carries is sane for the file whose tensors have
    ``shapes`` (from the safetensors header; nothing is loaded), else a CheckpointError.

    Checks each key's type, sign and bound (:data:`CHECKS`), compact entries against
    their bit masks, and the model ``arch`` + ``widths`` describe (built on the meta
    device) against the file's tensors and ``data.image_size``.
    """
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: metadata is a JSON {type(meta).__name__}, not an object")
    for key, (what, ok) in CHECKS.items():
        if key in meta and not ok(meta[key]):
            raise CheckpointError(f"{path}: metadata {key!r} is a {type(meta[key]).__name__} "
                                  f"that does not fit ({meta[key]!r:.60}); expected {what}")
    _check_config(path, meta.get("config"))
    _check_optimizer(path, meta, shapes)
    dense = _check_compact(path, meta.get("compact", {}), shapes)
    if meta.get("arch"):
        _check_model(path, meta, dense)
    return meta


def _check_config(path: str | Path, config: dict | None) -> None:
    """The recorded training config takes the values a config file could."""
    from .config import TrainConfig

    if not config:
        return
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    try:
        TrainConfig.from_dict({k: v for k, v in config.items() if k in names})
    except ConfigError as e:
        raise CheckpointError(f"{path}: metadata 'config': {e}") from None


def _check_optimizer(path: str | Path, meta: dict, shapes: Shapes) -> None:
    """The optimizer's groups, learning rates and tensors agree: a ``base_lrs`` per group,
    a tensor ``optim.I.*`` only for a parameter id I of the groups."""
    opt, sched = meta.get("optimizer"), meta.get("schedule") or {}
    if opt is None:
        return
    n = sum(len(g["params"]) for g in opt["param_groups"])
    ids = {int(k.split(".")[1]) for k in shapes if k.startswith("optim.")
           and k.split(".")[1].isdigit()}
    lrs = [sched[k] for k in ("base_lrs", "_last_lr") if k in sched]
    if "step" in meta and sched.get("last_epoch", meta["step"]) != meta["step"]:
        raise CheckpointError(f"{path}: metadata 'step' {meta['step']} is not the schedule's "
                              f"step {sched['last_epoch']}")
    if any(i >= n for i in ids) or any(len(x) != len(opt["param_groups"]) for x in lrs):
        raise CheckpointError(f"{path}: metadata 'optimizer' / 'schedule' do not match the "
                              f"optimizer tensors stored ({n} parameters, "
                              f"{len(opt['param_groups'])} groups)")


def _check_compact(path: str | Path, info: dict, shapes: Shapes) -> Shapes:
    """``shapes`` with each compact tensor at its dense shape, which its mask must cover
    exactly (so decoding allocates no more than 32 times the mask's bytes)."""
    dense = {k: s for k, s in shapes.items() if "::" not in k}
    for key, (shape, _) in info.items():
        mask, values = shapes.get(f"{key}::mask"), shapes.get(f"{key}::values")
        n = math.prod(shape)
        if mask is None or values is None or len(mask) != 1 or len(values) != 1 or not (
                8 * (mask[0] - 1) < n <= 8 * mask[0] or n == mask[0] == 0) or values[0] > n:
            raise CheckpointError(f"{path}: metadata 'compact' entry {key!r} does not match "
                                  "its stored values and mask")
        dense[key] = shape
    return dense


def _activations(model: nn.Module, size: tuple[int, ...]) -> int:
    """Bytes of the outputs of every leaf module for one float32 image of ``size``, on
    the meta device (nothing allocated); a model that refuses the size raises."""
    total = [0]

    def hook(_m, _i, out) -> None:
        total[0] += sum(t.numel() for t in (out if isinstance(out, tuple) else (out,))
                        if isinstance(t, torch.Tensor))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return 4 * total[0]


def _check_model(path: str | Path, meta: dict, shapes: Shapes) -> None:
    """The model ``arch`` + ``widths`` describe, sized on the meta device: no larger than
    the file's ``model.*`` tensors, and taking ``data.image_size`` within the budget."""
    from ..core.widths import apply_widths
    from ..models import create_model_checked, default_input_size

    arch = meta["arch"]
    where = f"{path}: metadata 'arch'"
    with torch.device("meta"):
        probe = create_model_checked(arch.get("name"), arch.get("num_classes"),
                                     arch.get("kwargs", {}), where, CheckpointError)
        apply_widths(probe, meta.get("widths"), str(path))
    need = sum(t.numel() for t in probe.state_dict().values())
    have = sum(math.prod(s) for k, s in shapes.items() if k.startswith("model."))
    if need > have:
        raise CheckpointError(f"{path}: metadata 'arch'/'widths' describe a model of {need:,} "
                              f"values but the file holds {have:,}")
    data = meta.get("data") or {}
    size = data.get("image_size")
    if size is None:
        return
    if "mean" in data and len(data["mean"]) != size[0]:
        raise CheckpointError(f"{path}: metadata 'data' has {len(data['mean'])} channel "
                              f"means for images of {size[0]} channels")
    probe.eval()
    own = default_input_size(arch["name"])
    try:
        budget = max(MIN_ACTIVATION_BYTES, ACTIVATION_FACTOR * _activations(probe, own))
    except Exception:  # noqa: BLE001 - the model does not take its default size (kwargs)
        budget = MIN_ACTIVATION_BYTES
    try:
        cost = _activations(probe, tuple(size))
    except Exception as e:  # noqa: BLE001 - any refusal means the size does not fit
        msg = " ".join(str(e).split())[:120] or type(e).__name__
        raise CheckpointError(f"{path}: metadata 'data' image_size {size} does not fit "
                              f"{arch['name']}: {msg}") from None
    if cost > budget:
        raise CheckpointError(f"{path}: metadata 'data' image_size {size} would need "
                              f"{cost / 2**20:,.0f} MiB of activations per image (at most "
                              f"{budget / 2**20:,.0f} MiB for {arch['name']})")
