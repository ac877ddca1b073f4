"""1-D residual CNNs for signals such as MNIST-1D, and the same nets without shortcuts.

The CIFAR ResNet of He et al. 2016 §4.2 with every 3×3 convolution a length-3 one: 3 stages ×
n blocks of Conv1d-BN-ReLU pairs (16/32/64 channels, stride 2 between stages), global average
pool, one linear layer; depth ``6n + 2``. Shortcuts are option A (identity; zero-padded
channels and stride-2 subsampling where the shape changes), which has no parameters, so a
``-noshort`` twin has exactly the same parameters and differs only in the identity add — the
pair Li et al. 2018 compare, on data a CPU sweeps in seconds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.errors import SpecError
from landscape.models.registry import register_model

DEPTHS = (8, 20)


class BasicBlock1d(nn.Module):
    """Two length-3 conv-BN layers; the shortcut (if any) is added before the second ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(planes)
        self.conv2 = nn.Conv1d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(planes)
        self.shortcut = shortcut
        self.stride = stride
        self.extra_channels = planes - in_planes

    def _identity(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride]
        if self.extra_channels:
            # He et al. §4.2 option A: extra channels are zeros, half on each side.
            pad = self.extra_channels // 2
            x = F.pad(x, (0, 0, pad, self.extra_channels - pad))
        return x

    def forward(self, x: Tensor) -> Tensor:  # x: (N, C, L)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut:
            out = out + self._identity(x)
        return F.relu(out)


class ResNet1d(nn.Module):
    """3 stages × n blocks with 16/32/64 channels, global average pool, one linear layer."""

    def __init__(
        self,
        depth: int = 20,
        *,
        shortcut: bool = True,
        in_channels: int = 1,
        num_classes: int = 10,
        widths: tuple[int, int, int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise SpecError(f"1-D ResNet depth must be 6n+2 with n >= 1 (8, 20, …), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv1d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(widths[0])
        stages: list[nn.Module] = []
        in_planes = widths[0]
        for index, planes in enumerate(widths):
            blocks = []
            for block in range(n):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(BasicBlock1d(in_planes, planes, stride, shortcut))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(widths[-1], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv1d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:  # x: (N, C, L)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))  # (N, 64, ⌈L/4⌉)
        out = torch.flatten(F.adaptive_avg_pool1d(out, 1), 1)
        logits: Tensor = self.fc(out)
        return logits


def _register(depth: int) -> None:
    @register_model(
        f"resnet1d-{depth}",
        f"1-D ResNet-{depth} for signals (He et al. 2016 §4.2 with length-3 convolutions)",
        spatial_dims=(1,),
    )
    def residual(*, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
        del image_size  # global average pooling makes the net length-agnostic
        return ResNet1d(depth, shortcut=True, in_channels=in_channels, num_classes=num_classes)

    @register_model(
        f"resnet1d-{depth}-noshort",
        f"1-D ResNet-{depth} without shortcuts: its plain twin (Li et al. 2018)",
        spatial_dims=(1,),
    )
    def plain(*, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
        del image_size
        return ResNet1d(depth, shortcut=False, in_channels=in_channels, num_classes=num_classes)


for _depth in DEPTHS:
    _register(_depth)
