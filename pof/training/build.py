"""The model a run trains: from the registry, optional start weights, sphere if asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..core.selection import Selection, record_selection
from ..core.sphere import sphere_layers, to_sphere
from ..core.structure import apply_selection, apply_structure
from ..core.widths import apply_widths
from ..errors import CheckpointError, ConfigError
from ..models import create_model_checked, input_kwargs
from .checkpoint import (
    load_checkpoint,
    load_model_state,
    load_plain_weights,
    split,
)
from .config import TrainConfig


def build_model(cfg: TrainConfig, num_classes: int, log=print,
                input_size: tuple[int, int, int] | None = None,
                ) -> tuple[nn.Module, dict[str, Any]]:
    """The model for ``cfg`` and its ``arch`` description (name, classes, kwargs).

    A model that takes ``in_channels`` / ``image_size`` gets them from ``input_size`` (the
    data's C, H, W) unless ``cfg.model_kwargs`` sets them. ``cfg.init`` weights are
    loaded strictly, except a classifier head of another size (e.g. ImageNet weights on a
    10-class head), which keeps the model's own (said so via ``log``). The layer selection
    (``cfg.exclude``) is recorded on the model.
    """
    kwargs = {**(input_kwargs(cfg.model, input_size) if input_size else {}),
              **cfg.model_kwargs}
    arch = {"name": cfg.model, "num_classes": num_classes, "kwargs": kwargs}
    model = create_model_checked(cfg.model, num_classes, kwargs, "model_kwargs", ConfigError)
    if cfg.init:
        _load_init(model, Path(cfg.init), cfg, num_classes, log)
    sphere = cfg.penalty == "pof" if cfg.sphere is None else cfg.sphere
    if sphere and not sphere_layers(model):
        to_sphere(model, exclude=cfg.exclude or None, cosine=cfg.cosine)
    record_selection(model, Selection(exclude=tuple(cfg.exclude)))  # kept if one is recorded
    return model, arch


def _load_init(model: nn.Module, path: Path, cfg: TrainConfig, num_classes: int,
               log) -> None:
    if path.suffix == ".safetensors" and _is_pof_checkpoint(path):
        tensors, meta = load_checkpoint(path)
        src = meta.get("arch", {})
        if src and (src.get("name"), src.get("num_classes")) != (cfg.model, num_classes):
            raise ConfigError(
                f"{path} holds {src.get('name')} with {src.get('num_classes')} classes, "
                f"not {cfg.model} with {num_classes}")
        apply_widths(model, meta.get("widths"), str(path))
        apply_structure(model, meta.get("structure", {}), str(path))
        apply_selection(model, meta.get("selection"), str(path))
        load_model_state(model, split(tensors, "model"), str(path))
        return
    state = load_plain_weights(path)
    head = _head_keys(model)
    own = model.state_dict()
    resized = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    wrong = [k for k in resized if k not in head]
    if wrong:
        raise CheckpointError(f"{path}: weights do not fit {cfg.model}: {wrong[0]} is "
                              f"{tuple(state[wrong[0]].shape)}, the model's is "
                              f"{tuple(own[wrong[0]].shape)}")
    for k in resized:  # e.g. torchvision ImageNet weights on a 10-class head
        state.pop(k)
    res = model.load_state_dict(state, strict=False)
    bad = [k for k in res.missing_keys if k not in resized] + res.unexpected_keys
    if bad:
        raise CheckpointError(f"{path}: weights do not fit {cfg.model}: "
                              f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}")
    if resized:
        log(f"pof: {path}: kept the model's own {', '.join(resized)} (shape differs)")


def _head_keys(model: nn.Module) -> set[str]:
    """``state_dict`` keys of the model's last Linear layer (its classifier head)."""
    last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return {f"{last[-1]}.weight", f"{last[-1]}.bias"} if last else set()


def _is_pof_checkpoint(path: Path) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return "pof" in (f.metadata() or {})
    except Exception:  # noqa: BLE001 - the loader reports what is wrong with the file
        return True

