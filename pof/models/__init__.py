"""Model zoo: torchvision-compatible ImageNet models, CIFAR variants and a small ViT, each
registered where it is defined (``@register_model``)."""

from .mobilenetv2 import MobileNetV2, mobilenet_v2, mobilenet_v2_cifar
from .registry import (
    create_model,
    create_model_checked,
    default_input_size,
    input_kwargs,
    list_models,
    register_model,
)
from .resnet import (
    BasicBlock,
    Bottleneck,
    CifarResNet,
    ResNet,
    resnet18,
    resnet20,
    resnet50,
    resnet56,
)
from .small import SmallCNN, small_cnn
from .vit import ViT, vit_tiny

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "MobileNetV2",
    "ResNet",
    "create_model",
    "create_model_checked",
    "default_input_size",
    "input_kwargs",
    "list_models",
    "mobilenet_v2",
    "mobilenet_v2_cifar",
    "register_model",
    "resnet18",
    "resnet20",
    "resnet50",
    "resnet56",
    "SmallCNN",
    "small_cnn",
    "ViT",
    "vit_tiny",
]
