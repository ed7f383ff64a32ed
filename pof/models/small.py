"""A small CNN for tiny images (8x8 digits, 28x28 MNIST): the demo's model."""

from __future__ import annotations

from torch import Tensor, nn


class SmallCNN(nn.Module):
    """conv-bn-relu x3 (the last two at double width) + global pool + linear head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32,
                 norm: bool = True) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=not norm),
                                 nn.BatchNorm2d(cout) if norm else nn.Identity(),
                                 nn.ReLU(inplace=True))

        w = width
        self.features = nn.Sequential(block(in_channels, w, 1), block(w, 2 * w, 1),
                                      block(2 * w, 2 * w, 2), block(2 * w, 4 * w, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def small_cnn(num_classes: int = 10, in_channels: int = 1, width: int = 32,
              norm: bool = True) -> SmallCNN:
    """The demo network (about 0.13M parameters at width 32; ``norm=False``: no BatchNorm)."""
    return SmallCNN(num_classes, in_channels, width, norm)
