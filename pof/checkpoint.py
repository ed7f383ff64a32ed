"""Checkpoints: tensors in one safetensors file, metadata as JSON in its header.

A checkpoint holds the model's ``state_dict`` (``model.*``), optionally the optimizer's
tensors (``optim.*``) and any extra tensors (``extra.*``: RNG state, penalty masks), and a
JSON metadata block with the architecture, pof's per-layer structure (sphere, masks,
folded layers), epoch/step and config. Writes are atomic (temp file + ``os.replace``);
a content hash detects truncated or corrupt files. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .channel_widths import apply_widths
from .prune import PruneMask, as_folded_attention, fold, is_folded
from .selection import replace_module, unit_dim_of
from .sphere import UnitSphere, _cosine_hook

FORMAT = "pof-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupt or not a pof checkpoint."""


# ---------------------------------------------------------------- model structure
def structure(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Per-layer pof state needed to rebuild ``model`` before loading its ``state_dict``."""
    if getattr(model, "_pof_channel_plan", None) is not None:
        raise CheckpointError("model has channel masks: call pof.remove(model) to remove the "
                              "channels before saving it")
    out: dict[str, dict[str, Any]] = {}
    for name, w in (getattr(model, "_pof_widths", None) or {}).items():
        out[name] = {"width": w}  # a channel-pruned model: rebuild these sizes first
    for name, m in model.named_modules():
        entry: dict[str, Any] = out.pop(name, {})
        if is_folded(m):
            entry["folded"] = True
        if hasattr(m, "_pof_cosine_handle") or any(
            h is _cosine_hook for h in m._forward_hooks.values()
        ):
            entry["cosine"] = True
        for attr in (m.parametrizations.keys() if parametrize.is_parametrized(m) else []):
            chain = []
            for p in m.parametrizations[attr]:
                if isinstance(p, PruneMask):
                    chain.append({"mask": p.recover, "mean_scope": p.mean_scope})
                elif isinstance(p, UnitSphere):
                    chain.append({"sphere": True, "scale": p.scale is not None})
                else:
                    raise CheckpointError(
                        f"layer {name!r} has a parametrization pof cannot save: {type(p).__name__}"
                    )
            entry[attr] = chain  # "weight", or "in_proj_weight" for attention
        if entry:
            out[name] = entry
    return out


def apply_structure(model: nn.Module, struct: dict[str, dict[str, Any]]) -> nn.Module:
    """Rebuild the pof structure described by :func:`structure` on a fresh model."""
    widths = {n: e["width"] for n, e in struct.items() if "width" in e}
    if widths:
        try:
            apply_widths(model, widths)
        except ValueError as e:
            raise CheckpointError(str(e)) from None
    mods = dict(model.named_modules())
    for name, entry in struct.items():
        m = mods.get(name)
        if m is None:
            raise CheckpointError(f"checkpoint names layer {name!r}, which the model lacks")
        for attr, chain in entry.items():
            if attr in ("folded", "cosine", "width"):
                continue
            ud = unit_dim_of(m, attr)
            groups = 3 if isinstance(m, nn.MultiheadAttention) else 1
            w = getattr(m, attr)
            for p in chain:
                if p.get("sphere"):
                    scale = torch.ones(w.shape[ud]) if p["scale"] else None
                    parametrize.register_parametrization(m, attr, UnitSphere(scale, unit_dim=ud))
                else:
                    mask = torch.ones_like(w, dtype=torch.bool)
                    parametrize.register_parametrization(
                        m, attr, PruneMask(mask, p["mask"], p["mean_scope"], ud, groups))
        if entry.get("folded"):
            if isinstance(m, nn.MultiheadAttention):
                m = as_folded_attention(m)
            else:
                ud = unit_dim_of(m)
                tmp = PruneMask(torch.ones_like(m.weight, dtype=torch.bool), "mean", "unit", ud)
                parametrize.register_parametrization(m, "weight", tmp)
                m = fold(m)
            replace_module(model, name, m)
        if entry.get("cosine"):
            m._pof_cosine_handle = m.register_forward_hook(_cosine_hook)
    return model


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    info: dict[str, Any] = {"format": FORMAT, **(meta or {}), "structure": structure(model)}
    if optimizer is not None:
        opt_tensors, info["optimizer"] = _flatten_optimizer(optimizer.state_dict())
        tensors.update({k: v.detach().cpu().contiguous() for k, v in opt_tensors.items()})
    for k, v in (extra or {}).items():
        tensors[f"extra.{k}"] = v.detach().cpu().contiguous()
    if compact:
        info["compact"] = _encode_sparse(tensors)
    info["sha256"] = _digest(tensors)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"pof": json.dumps(info)})
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read and verify a checkpoint: ``(tensors, metadata)``. Raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): "
                              f"{str(e).splitlines()[0]}") from None
    if "pof" not in header:
        raise CheckpointError(f"{path}: a safetensors file without pof metadata")
    try:
        meta = json.loads(header["pof"])
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: corrupt metadata") from None
    if meta.get("sha256") != _digest(tensors):
        raise CheckpointError(f"{path}: content hash mismatch (file corrupt)")
    _decode_sparse(tensors, meta.get("compact", {}))
    return tensors, meta


def split(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Tensors under ``prefix.`` with the prefix stripped."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def model_from_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a registry model (with its pof structure) from a checkpoint."""
    from .models import create_model

    tensors, meta = load_checkpoint(path)
    arch = meta.get("arch")
    if not arch:
        raise CheckpointError(f"{path}: metadata names no architecture ('arch')")
    model = create_model(arch["name"], num_classes=arch["num_classes"], **arch.get("kwargs", {}))
    apply_structure(model, meta.get("structure", {}))
    load_model_state(model, split(tensors, "model"), str(path))
    return model, meta


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
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return split(load_checkpoint(path)[0], "model")
        except CheckpointError as e:
            if "without pof metadata" not in str(e):
                raise
            return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure is a bad file for the user
        raise CheckpointError(f"{path}: cannot read weights ({type(e).__name__})") from None
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}
