"""Checkpoints: tensors in one safetensors file, metadata as JSON in its header.

A checkpoint holds the model's ``state_dict`` (``model.*``), optionally the optimizer's
tensors (``optim.*``) and any extra tensors (``extra.*``: RNG state, penalty masks), and a
JSON metadata block with the architecture, pof's per-layer structure (sphere, masks,
folded layers), a channel-pruned model's layer widths, epoch/step and config. Writes are
atomic (temp file + ``os.replace``); a content hash detects truncated or corrupt files.
Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..core.structure import apply_selection, apply_structure, selection_meta, structure
from ..core.widths import apply_widths, widths_meta
from ..errors import CheckpointError
from ..fileio import atomic_path
from .meta_check import FORMAT, check_meta

__all__ = ["CheckpointError", "apply_structure", "load_checkpoint", "load_model_state",
           "load_plain_weights", "model_from_checkpoint", "optimizer_state", "save_checkpoint",
           "split", "structure"]


# ---------------------------------------------------------------- optimizer state
def _flatten_optimizer(state: dict) -> tuple[dict[str, Tensor], dict]:
    tensors, meta = {}, {"param_groups": state["param_groups"], "state": {}}
    for idx, st in state["state"].items():
        meta["state"][str(idx)] = {}
        for key, val in st.items():
            if isinstance(val, Tensor):
                tensors[f"optim.{idx}.{key}"] = val
            else:
                meta["state"][str(idx)][key] = val
    return tensors, meta


def _unflatten_optimizer(tensors: dict[str, Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {int(k): dict(v) for k, v in meta["state"].items()}
    for key, val in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = val
    return {"state": state, "param_groups": meta["param_groups"]}


# ---------------------------------------------------------------- sparse storage
def _encode_sparse(tensors: dict[str, Tensor], min_zeros: float = 0.1) -> dict[str, list]:
    """Store mostly-zero float tensors as non-zero values + a bit-packed mask, in place.

    Returns ``{key: [shape, dtype]}`` for the metadata. A tensor with fraction ``z`` of
    zeros then takes ``(1 - z) + 1/32`` of its float32 size.
    """
    import numpy as np

    info = {}
    for key in list(tensors):
        t = tensors[key]
        if not t.is_floating_point() or t.numel() < 64:
            continue
        nz = t != 0
        if 1 - nz.float().mean().item() < min_zeros:
            continue
        del tensors[key]
        tensors[f"{key}::values"] = t[nz].contiguous()
        tensors[f"{key}::mask"] = torch.from_numpy(np.packbits(nz.flatten().numpy()))
        info[key] = [list(t.shape), str(t.dtype).removeprefix("torch.")]
    return info


def _decode_sparse(tensors: dict[str, Tensor], info: dict[str, list]) -> None:
    """Inverse of :func:`_encode_sparse`, in place."""
    import numpy as np

    for key, (shape, dtype) in info.items():
        values, packed = tensors.pop(f"{key}::values"), tensors.pop(f"{key}::mask")
        n = int(np.prod(shape)) if shape else 1
        nz = torch.from_numpy(np.unpackbits(packed.numpy(), count=n).astype(bool))
        dense = torch.zeros(n, dtype=getattr(torch, dtype))
        dense[nz] = values
        tensors[key] = dense.view(shape)


# ---------------------------------------------------------------- save / load
def _digest(tensors: dict[str, Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    meta: dict[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    extra: dict[str, Tensor] | None = None,
    compact: bool = False,
) -> Path:
    """Atomically write ``model`` (+ optimizer, extra tensors, metadata) to ``path``.

    ``compact=True`` stores mostly-zero weights (a pruned model after ``pof.remove``) as
    their non-zero values plus a bit mask, so the file shrinks with the sparsity.
    """
    path = Path(path)
    tensors = _unshared({f"model.{k}": v.detach().cpu().contiguous()
                         for k, v in model.state_dict().items()})
    info: dict[str, Any] = {"format": FORMAT, **(meta or {}), "structure": structure(model)}
    if (sel := selection_meta(model)) is not None:
        info["selection"] = sel
    if (widths := widths_meta(model)) is not None:
        info["widths"] = widths  # a channel-pruned model: rebuilt at these sizes
    if optimizer is not None:
        opt_tensors, info["optimizer"] = _flatten_optimizer(optimizer.state_dict())
        tensors.update({k: v.detach().cpu().contiguous() for k, v in opt_tensors.items()})
    for k, v in (extra or {}).items():
        tensors[f"extra.{k}"] = v.detach().cpu().contiguous()
    if compact:
        info["compact"] = _encode_sparse(tensors)
    info["sha256"] = _digest(tensors)
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata={"pof": json.dumps(info)})
        except SafetensorError as e:  # an OS error inside safetensors: the same one line
            raise _os_error(e) from None
    return path


def _os_error(e: SafetensorError) -> OSError:
    """The OSError behind a safetensors write error (its ``os error N``), for
    :func:`~pof.fileio.atomic_path` to report as one line."""
    import re

    code = re.search(r"os error (\d+)", str(e))
    if code:
        return OSError(int(code[1]), os.strerror(int(code[1])))
    return OSError(" ".join(str(e).split()))


def _unshared(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """``tensors`` with a copy of each one that shares memory with an earlier one (tied
    weights, e.g. GPT-2's embedding and head), which safetensors refuses to write."""
    seen: set[int] = set()
    for key, t in tensors.items():
        ptr = t.untyped_storage().data_ptr() if t.numel() else 0
        if ptr and ptr in seen:
            tensors[key] = t.clone()
        seen.add(ptr)
    return tensors


def _read(path: Path) -> tuple[dict[str, str], dict[str, Tensor]]:
    """(safetensors header metadata, tensors) of ``path``."""
    _check_file(path)
    try:
        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
        return header, load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _unreadable(path, e) from None


def _check_file(path: Path) -> None:
    """A CheckpointError unless ``path`` is a file (a folder or a missing path said so)."""
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; name the checkpoint file in it "
                              "(e.g. final.safetensors)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")


def _unreadable(path: Path, e: Exception) -> CheckpointError:
    """The error for a file safetensors cannot read: a pickle (.pt/.pth/.bin) said so."""
    if path.suffix.lower() in (".pt", ".pth", ".bin", ".ckpt", ".pkl"):
        return CheckpointError(f"{path}: not a safetensors checkpoint; pof reads its own "
                               "checkpoints as .safetensors (a torch.save file is accepted "
                               "only as `pof train --init` weights)")
    return CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): "
                           f"{str(e).splitlines()[0] if str(e) else type(e).__name__}")


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's metadata alone (no tensors read, no hash checked), every value
    checked (:func:`pof.training.meta_check.check_meta`) before anything is built."""
    path = Path(path)
    _check_file(path)
    try:
        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
            shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _unreadable(path, e) from None
    if "pof" not in header:
        raise CheckpointError(f"{path}: a safetensors file without pof metadata")
    try:
        meta = json.loads(header["pof"])
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: corrupt metadata") from None
    return check_meta(path, meta, shapes)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read and verify a checkpoint: ``(tensors, metadata)``. Raises CheckpointError."""
    path = Path(path)
    meta = read_meta(path)
    tensors = _read(path)[1]
    if meta.get("sha256") != _digest(tensors):
        raise CheckpointError(f"{path}: content hash mismatch (file corrupt)")
    try:
        _decode_sparse(tensors, meta.get("compact", {}))
    except (KeyError, RuntimeError, ValueError):
        raise CheckpointError(f"{path}: compact tensors do not match their metadata") from None
    return tensors, meta


def split(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Tensors under ``prefix.`` with the prefix stripped."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def model_from_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a registry model (with its pof structure and layer selection) from a
    checkpoint; metadata of the wrong type or size is a :class:`CheckpointError`."""
    from ..models import create_model_checked

    tensors, meta = load_checkpoint(path)
    arch = meta.get("arch")
    if not arch:
        raise CheckpointError(f"{path}: metadata names no architecture ('arch')")
    model = create_model_checked(arch.get("name"), arch.get("num_classes"),
                                 arch.get("kwargs", {}), f"{path}: metadata 'arch'",
                                 CheckpointError)
    apply_widths(model, meta.get("widths"), str(path))
    apply_structure(model, meta.get("structure", {}), str(path))
    apply_selection(model, meta.get("selection"), str(path))
    load_model_state(model, split(tensors, "model"), str(path))
    return model, meta


# metadata that only resuming a run needs (and what save_checkpoint writes afresh)
TRAINING_STATE = ("optimizer", "schedule", "epoch_sums", "penalty_calls", "format", "sha256",
                  "compact", "structure", "selection", "widths")


def model_only_copy(src: str | os.PathLike, dest: str | os.PathLike,
                    data_source: str | None = None) -> Path:
    """Write ``src``'s model alone (no optimizer or penalty state; about half the size) to
    ``dest``, for sharing: ``pof eval``/``sweep``/``prune`` read it like the original.
    ``data_source`` replaces the recorded data path (e.g. a relative one)."""
    model, meta = model_from_checkpoint(src)
    meta = {k: v for k, v in meta.items() if k not in TRAINING_STATE}
    if data_source is not None:
        meta["data"] = {**meta.get("data", {}), "source": data_source}
    return save_checkpoint(dest, model, meta)


def optimizer_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict | None:
    """The optimizer ``state_dict`` stored in a checkpoint, or None."""
    return _unflatten_optimizer(tensors, meta["optimizer"]) if "optimizer" in meta else None


def load_model_state(model: nn.Module, state: dict[str, Tensor], source: str = "") -> None:
    """``load_state_dict(strict=True)`` with a one-line error on mismatch."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise CheckpointError(f"{source}: weights do not fit the model: {detail[:300]}") from None


def load_plain_weights(path: str | os.PathLike) -> dict[str, Tensor]:
    """A plain ``state_dict`` from ``.safetensors``, a pof checkpoint or a ``.pt/.pth`` file.

    ``.pt``/``.pth`` files (e.g. torchvision's) are read with ``weights_only=True``.
    """
    path = Path(path)
    _check_file(path)
    if path.suffix == ".safetensors":
        header, tensors = _read(path)
        return split(load_checkpoint(path)[0], "model") if "pof" in header else tensors
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure is a bad file for the user
        raise CheckpointError(f"{path}: cannot read weights ({type(e).__name__})") from None
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}
