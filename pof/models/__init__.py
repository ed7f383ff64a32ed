"""Model zoo: torchvision-compatible ImageNet models and CIFAR variants, each registered
where it is defined (``@register_model``)."""

from .mobilenetv2 import MobileNetV2, mobilenet_v2, mobilenet_v2_cifar
from .registry import (
    create_model,
    create_model_checked,
    default_input_size,
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

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "MobileNetV2",
    "ResNet",
    "create_model",
    "create_model_checked",
    "default_input_size",
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
]
