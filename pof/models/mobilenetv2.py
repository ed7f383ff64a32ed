"""MobileNetV2 (Sandler et al., 2018) with torchvision-compatible ``state_dict`` keys.

Key layout: ``features.0.{0,1}`` stem conv/BN, ``features.1`` .. ``features.17`` inverted
residual blocks (``features.i.conv.*``), ``features.18.{0,1}`` last 1x1 conv/BN,
``classifier.0`` dropout and ``classifier.1`` linear.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .registry import CIFAR_INPUT, register_model

__all__ = ["ConvBNReLU6", "InvertedResidual", "MobileNetV2", "mobilenet_v2", "mobilenet_v2_cifar"]

# t (expansion), c (output channels), n (repeats), s (stride of the first block)
IMAGENET_SETTING: list[list[int]] = [
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]

# Same as above with the c=24 stage at stride 1 (used together with a stride-1 stem).
CIFAR_SETTING: list[list[int]] = [
    [1, 16, 1, 1],
    [6, 24, 2, 1],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` without dropping below 90%."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNReLU6(nn.Sequential):
    """Conv (no bias, 'same' padding) -> BN -> ReLU6; children named ``0``, ``1``, ``2``."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, groups: int = 1
    ) -> None:
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> linear project (1x1), residual when shapes match."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.stride = stride
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(inp, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    """MobileNetV2 backbone + ``Dropout -> Linear`` classifier.

    Args:
        num_classes: output classes.
        width_mult: channel multiplier (rounded to multiples of ``round_nearest``).
        inverted_residual_setting: rows of ``[t, c, n, s]``; defaults to the ImageNet setting.
        stem_stride: stride of the first 3x3 conv (2 for ImageNet, 1 for CIFAR).
        round_nearest: channel rounding divisor.
        dropout: dropout probability before the classifier.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        inverted_residual_setting: list[list[int]] | None = None,
        stem_stride: int = 2,
        round_nearest: int = 8,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        setting = inverted_residual_setting
        if setting is None:
            setting = IMAGENET_SETTING
        if not setting or any(len(row) != 4 for row in setting):
            raise ValueError(f"inverted_residual_setting needs [t, c, n, s] rows, got {setting}")
        in_ch = make_divisible(32 * width_mult, round_nearest)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult), round_nearest)
        features: list[nn.Module] = [ConvBNReLU6(3, in_ch, stride=stem_stride)]
        for t, c, n, s in setting:
            out_ch = make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t))
                in_ch = out_ch
        features.append(ConvBNReLU6(in_ch, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes)
        )

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)


@register_model("mobilenet_v2")
def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0, **kwargs) -> MobileNetV2:
    """MobileNetV2 for ImageNet (224x224 -> 7x7 before pooling); torchvision-compatible keys."""
    return MobileNetV2(num_classes=num_classes, width_mult=width_mult, **kwargs)


@register_model("mobilenet_v2_cifar", num_classes=10, input_size=CIFAR_INPUT)
def mobilenet_v2_cifar(num_classes: int = 10, width_mult: float = 1.0, **kwargs) -> MobileNetV2:
    """MobileNetV2 for 32x32 inputs.

    Same module tree (and parameter shapes, except ``classifier.1``) as :func:`mobilenet_v2`,
    but the stem conv has stride 1 and the c=24 stage has stride 1 instead of 2, so the total
    downsampling is 8x: a 32x32 input reaches 4x4 before global pooling.
    """
    kwargs.setdefault("inverted_residual_setting", CIFAR_SETTING)
    kwargs.setdefault("stem_stride", 1)
    return MobileNetV2(num_classes=num_classes, width_mult=width_mult, **kwargs)
