"""A model plugin for landscape: what a researcher's package would ship."""

from __future__ import annotations

from torch import Tensor, nn


class ToyCNN(nn.Module):
    """conv → BN → ReLU → global average pool → linear."""

    def __init__(self, in_channels: int, num_classes: int, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.relu(self.bn(self.conv(x)))).flatten(1))


def build_toy_cnn(
    *, in_channels: int, num_classes: int, image_size: int, width: int = 8
) -> nn.Module:
    """Toy CNN from a plugin package: one conv-BN-ReLU layer, global pooling, linear (width)."""
    del image_size  # global pooling: any input size
    return ToyCNN(in_channels, num_classes, width)
