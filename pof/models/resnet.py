"""ResNet models.

ImageNet layouts (``resnet18``, ``resnet50``) reproduce torchvision's module tree, so their
``state_dict`` keys and shapes match torchvision's checkpoints exactly. CIFAR layouts
(``resnet20``, ``resnet56``) follow He et al. (2016), Sec. 4.2, with a projection (1x1 conv + BN)
shortcut whenever the shape changes; they reuse :class:`BasicBlock`, so key names follow the
same torchvision style (``conv1``, ``bn1``, ``layer1`` .. ``layer3``, ``fc``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .registry import CIFAR_INPUT, register_model

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "CifarResNet",
    "resnet18",
    "resnet50",
    "resnet20",
    "resnet56",
    "resnet20_gn",
]

Norm = Callable[[int], nn.Module]  # a normalisation layer for this many channels


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 8 channels a group (fewer groups for narrow layers): no running
    statistics, so nothing to re-estimate after pruning."""
    return nn.GroupNorm(max(1, channels // 8), channels)


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


def _projection(in_ch: int, out_ch: int, stride: int,
                norm: Norm = nn.BatchNorm2d) -> nn.Sequential:
    """Shortcut projection; keys ``downsample.0`` (conv) and ``downsample.1`` (BN)."""
    return nn.Sequential(_conv1x1(in_ch, out_ch, stride), norm(out_ch))


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or projection) shortcut."""

    expansion: int = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
        norm: Norm = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = norm(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided, "ResNet v1.5") -> 1x1 bottleneck with 4x expansion."""

    expansion: int = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Block = type[BasicBlock] | type[Bottleneck]


def _make_stage(
    block: Block, inplanes: int, planes: int, blocks: int, stride: int, **norm: Norm
) -> tuple[nn.Sequential, int]:
    """Build one stage; returns the stage and its output channel count (``norm=``: the
    normalisation layer of a BasicBlock stage, BatchNorm by default)."""
    out_ch = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out_ch:
        downsample = _projection(inplanes, out_ch, stride, *norm.values())
    layers: list[nn.Module] = [block(inplanes, planes, stride, downsample, **norm)]
    layers += [block(out_ch, planes, **norm) for _ in range(1, blocks)]
    return nn.Sequential(*layers), out_ch


def _init_weights(model: nn.Module, zero_init_residual: bool = False) -> None:
    """Kaiming-normal (fan_out) convs, BN weight 1 / bias 0, optional zero-init of last BN."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)


class ResNet(nn.Module):
    """ImageNet ResNet (7x7/2 stem + max-pool, four stages of 64/128/256/512 planes)."""

    def __init__(
        self,
        block: Block,
        layers: list[int],
        num_classes: int = 1000,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"ResNet expects 4 stage depths, got {layers}")
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        ch = 64
        self.layer1, ch = _make_stage(block, ch, 64, layers[0], stride=1)
        self.layer2, ch = _make_stage(block, ch, 128, layers[1], stride=2)
        self.layer3, ch = _make_stage(block, ch, 256, layers[2], stride=2)
        self.layer4, ch = _make_stage(block, ch, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(ch, num_classes)
        _init_weights(self, zero_init_residual)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


class CifarResNet(nn.Module):
    """CIFAR ResNet-(6n+2) of He et al. (2016): 3x3 stem of 16 channels, three stages of
    ``n`` BasicBlocks with 16/32/64 channels (stride 2 at the start of stages 2 and 3),
    global average pooling and ``fc``.
    """

    def __init__(self, depth: int, num_classes: int = 10, zero_init_residual: bool = False,
                 norm: str = "batch") -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
        layer = {"batch": nn.BatchNorm2d, "group": group_norm}.get(norm)
        if layer is None:
            raise ValueError(f"norm must be 'batch' or 'group', got {norm!r}")
        n = (depth - 2) // 6
        self.conv1 = _conv3x3(3, 16)
        self.bn1 = layer(16)
        self.relu = nn.ReLU(inplace=True)
        ch = 16
        self.layer1, ch = _make_stage(BasicBlock, ch, 16, n, stride=1, norm=layer)
        self.layer2, ch = _make_stage(BasicBlock, ch, 32, n, stride=2, norm=layer)
        self.layer3, ch = _make_stage(BasicBlock, ch, 64, n, stride=2, norm=layer)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(ch, num_classes)
        _init_weights(self, zero_init_residual)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


@register_model("resnet18")
def resnet18(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-18 (ImageNet layout, torchvision-compatible keys)."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes, **kwargs)


@register_model("resnet50")
def resnet50(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-50 (ImageNet layout, v1.5 stride placement, torchvision-compatible keys)."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, **kwargs)


@register_model("resnet20", num_classes=10, input_size=CIFAR_INPUT)
def resnet20(num_classes: int = 10, **kwargs) -> CifarResNet:
    """ResNet-20 for 32x32 inputs (n=3)."""
    return CifarResNet(20, num_classes=num_classes, **kwargs)


@register_model("resnet56", num_classes=10, input_size=CIFAR_INPUT)
def resnet56(num_classes: int = 10, **kwargs) -> CifarResNet:
    """ResNet-56 for 32x32 inputs (n=9)."""
    return CifarResNet(56, num_classes=num_classes, **kwargs)


@register_model("resnet20_gn", num_classes=10, input_size=CIFAR_INPUT)
def resnet20_gn(num_classes: int = 10, **kwargs) -> CifarResNet:
    """ResNet-20 with GroupNorm (8 channels a group) instead of BatchNorm: a model whose
    pruned versions have no statistics to re-estimate."""
    return CifarResNet(20, num_classes=num_classes, norm="group", **kwargs)
