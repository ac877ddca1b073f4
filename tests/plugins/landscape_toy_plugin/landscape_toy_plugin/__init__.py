"""A plugin for landscape: what a researcher's package would ship (a model and a loss)."""

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


def hinge_l1_loss(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
    """max(0, 1 − f_y + max_{c≠y} f_c) + 1e-3·‖θ‖₁: multiclass hinge with an L1 penalty.

    A loss plugin: per-sample losses, the penalty over the parameters the model holds (the
    grid point's weights on a surface).
    """
    outputs = model(inputs)
    true = outputs.gather(1, targets[:, None]).squeeze(1)
    others = outputs.scatter(1, targets[:, None], float("-inf")).amax(dim=1)
    penalty = sum(p.abs().sum() for p in model.parameters())
    return (1 - true + others).clamp(min=0) + 1e-3 * penalty
