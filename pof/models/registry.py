"""Name-based model registry: ``create_model("resnet20")``, ``list_models()``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .mobilenetv2 import mobilenet_v2, mobilenet_v2_cifar
from .resnet import resnet18, resnet20, resnet50, resnet56
from .small import small_cnn
from .vit import vit_tiny

__all__ = ["register_model", "create_model", "list_models", "default_input_size",
           "input_kwargs"]

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
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None


def list_models() -> list[str]:
    """Sorted names of all registered models."""
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int | None = None, **kwargs) -> nn.Module:
    """Build a registered model; ``num_classes=None`` uses the model's default (1000 or 10)."""
    entry = _entry(name)
    return entry.fn(num_classes=entry.num_classes if num_classes is None else num_classes, **kwargs)


def default_input_size(name: str) -> tuple[int, int, int]:
    """Expected ``(C, H, W)`` input size: (3, 224, 224) for ImageNet, (3, 32, 32) for CIFAR."""
    return _entry(name).input_size


def input_kwargs(name: str, input_size: tuple[int, int, int]) -> dict[str, object]:
    """``in_channels`` / ``image_size`` for data of ``input_size`` (C, H, W), for the ones
    model ``name`` accepts (so a model adapts to e.g. 1-channel 8x8 digits)."""
    import inspect

    params = inspect.signature(_entry(name).fn).parameters
    out: dict[str, object] = {}
    if "in_channels" in params:
        out["in_channels"] = int(input_size[0])
    if "image_size" in params:
        out["image_size"] = int(input_size[1])
    return out


register_model("resnet18", resnet18)
register_model("resnet50", resnet50)
register_model("mobilenet_v2", mobilenet_v2)
register_model("resnet20", resnet20, num_classes=10, input_size=CIFAR_INPUT)
register_model("resnet56", resnet56, num_classes=10, input_size=CIFAR_INPUT)
register_model("mobilenet_v2_cifar", mobilenet_v2_cifar, num_classes=10, input_size=CIFAR_INPUT)
register_model("small_cnn", small_cnn, num_classes=10, input_size=(1, 8, 8))
register_model("vit_tiny", vit_tiny, num_classes=10, input_size=CIFAR_INPUT)
