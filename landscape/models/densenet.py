"""DenseNet-BC for CIFAR-sized inputs (Huang et al. 2017, §3 and §4.2), for the dense-vs-residual
comparison: 3 dense blocks of bottleneck layers (BN-ReLU-1×1 conv to 4k, BN-ReLU-3×3 conv to k),
transitions that halve the channels (compression 0.5) and the resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.errors import SpecError
from landscape.models.registry import register_model


class Bottleneck(nn.Module):
    """One BC layer: its ``growth`` new feature maps are concatenated to its input."""

    def __init__(self, in_planes: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([x, out], 1)


class Transition(nn.Module):
    """Compression (1×1 conv) then 2×2 average pooling between dense blocks."""

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNetBC(nn.Module):
    """DenseNet-BC with ``(depth - 4) / 6`` bottleneck layers per block."""

    def __init__(
        self,
        depth: int = 40,
        growth: int = 12,
        *,
        in_channels: int = 3,
        num_classes: int = 10,
        compression: float = 0.5,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise SpecError(f"DenseNet-BC depth must be 6n+4 with n >= 1 (40, 100, …), got {depth}")
        n = (depth - 4) // 6
        planes = 2 * growth
        self.conv1 = nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        for index in range(3):
            layers = []
            for _ in range(n):
                layers.append(Bottleneck(planes, growth))
                planes += growth
            blocks.append(nn.Sequential(*layers))
            if index < 2:
                out_planes = int(planes * compression)
                blocks.append(Transition(planes, out_planes))
                planes = out_planes
        self.features = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(planes)
        self.fc = nn.Linear(planes, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn(self.features(self.conv1(x))))
        logits: Tensor = self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))
        return logits


# Huang et al. use growth rates 12 to 40; parameters grow with its square.
ARG_RANGES = {"growth": (1, 48)}


def _register(depth: int) -> None:
    @register_model(
        f"densenet-bc-{depth}",
        f"DenseNet-BC-{depth}, growth rate 12 (Huang et al. 2017)",
        arg_ranges=ARG_RANGES,
    )
    def builder(
        *, in_channels: int, num_classes: int, image_size: int, growth: int = 12
    ) -> nn.Module:
        if image_size < 4:
            raise SpecError(f"DenseNet-BC pools twice; image_size must be >= 4, got {image_size}")
        return DenseNetBC(depth, growth, in_channels=in_channels, num_classes=num_classes)


for _depth in (40, 100):
    _register(_depth)
