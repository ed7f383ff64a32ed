"""Name-based model registry: ``create_model("resnet20")``, ``list_models()``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import PofError

__all__ = ["register_model", "create_model", "create_model_checked", "list_models",
           "default_input_size", "input_kwargs"]

MAX_PARAMS = 2_000_000_000  # a model description asking for more is a mistake

IMAGENET_INPUT: tuple[int, int, int] = (3, 224, 224)
CIFAR_INPUT: tuple[int, int, int] = (3, 32, 32)


@dataclass(frozen=True)
class ModelEntry:
    """A registered constructor with its defaults."""

    fn: Callable[..., nn.Module]
    num_classes: int
    input_size: tuple[int, int, int]


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    fn: Callable[..., nn.Module] | None = None,
    *,
    num_classes: int = 1000,
    input_size: tuple[int, int, int] = IMAGENET_INPUT,
) -> Callable:
    """Register ``fn`` under ``name``; usable directly or as a decorator.

    ``fn`` must accept ``num_classes`` as a keyword argument.
    """

    def _add(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelEntry(f, num_classes, tuple(input_size))
        return f

    return _add if fn is None else _add(fn)


def _entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise PofError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None


def list_models() -> list[str]:
    """Sorted names of all registered models."""
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int | None = None, **kwargs) -> nn.Module:
    """Build a registered model; ``num_classes=None`` uses the model's default (1000 or 10)."""
    entry = _entry(name)
    classes = entry.num_classes if num_classes is None else num_classes
    model = entry.fn(num_classes=classes, **kwargs)
    model.pof_arch = {"name": name, "num_classes": classes, "kwargs": dict(kwargs)}  # pof.save
    return model


def default_input_size(name: str) -> tuple[int, int, int]:
    """Expected ``(C, H, W)`` input size: (3, 224, 224) for ImageNet, (3, 32, 32) for CIFAR."""
    return _entry(name).input_size


def input_kwargs(name: str, input_size: tuple[int, int, int]) -> dict[str, int]:
    """``in_channels`` / ``image_size`` for data of ``input_size`` (C, H, W), for those that
    model ``name``'s constructor takes (so e.g. a ViT adapts to 1-channel 8x8 digits)."""
    import inspect

    params = inspect.signature(_entry(name).fn).parameters
    out: dict[str, int] = {}
    if "in_channels" in params:
        out["in_channels"] = int(input_size[0])
    if "image_size" in params:
        out["image_size"] = int(input_size[1])
    return out


def create_model_checked(name: object, num_classes: object, kwargs: object, where: str,
                         error: type[PofError] = PofError) -> nn.Module:
    """:func:`create_model` for a model described by data (a config, checkpoint metadata):
    wrong types, arguments the constructor refuses, and sizes over ``MAX_PARAMS``
    parameters raise ``error`` naming ``where`` (the model is sized on the meta device
    first, so nothing large is allocated)."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise error(f"{where}: unknown model {name!r}; available: {', '.join(list_models())}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise error(f"{where}: num_classes must be a whole number >= 1, got {num_classes!r}")
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise error(f"{where}: model kwargs must be a mapping, got {kwargs!r}")
    try:
        with torch.device("meta"):
            probe = create_model(name, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError, RuntimeError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        raise error(f"{where}: {name} does not accept {kwargs}: {msg}") from None
    size = sum(p.numel() for p in probe.parameters())
    if size > MAX_PARAMS:
        raise error(f"{where}: {name} with {kwargs} would have {size:,} parameters "
                    f"(more than {MAX_PARAMS:,})")
    return create_model(name, num_classes=num_classes, **kwargs)
