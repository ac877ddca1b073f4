"""CIFAR ResNets of He et al. 2016 §4.2, and the same nets without shortcuts (Li et al. 2018).

One class covers every depth ``6n + 2`` with shortcuts on or off, so a "-noshort" twin differs
from its ResNet in exactly one thing: the identity add. Shortcuts are option A of He et al.
(identity; zero-padded channels and stride-2 subsampling where the shape changes), which has
no parameters — so a twin has exactly the same parameter count. Option B (1×1 projection +
BN) is available as ``shortcut="projection"``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.errors import SpecError, UnknownNameError
from landscape.models.registry import register_model

Shortcut = Literal["identity", "projection", "none"]
SHORTCUTS: tuple[str, ...] = ("identity", "projection", "none")


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers; the shortcut (if any) is added before the second ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: Shortcut) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut_kind = shortcut
        self.stride = stride
        self.extra_channels = planes - in_planes
        self.projection: nn.Module | None = None
        if shortcut == "projection" and (stride != 1 or in_planes != planes):
            self.projection = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def _shortcut(self, x: Tensor) -> Tensor:
        if self.projection is not None:
            projected: Tensor = self.projection(x)
            return projected
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra_channels:
            # He et al. §4.2 option A: extra channels are zeros, half on each side.
            pad = self.extra_channels // 2
            x = F.pad(x, (0, 0, 0, 0, pad, self.extra_channels - pad))
        return x

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut_kind != "none":
            out = out + self._shortcut(x)
        return F.relu(out)


class CifarResNet(nn.Module):
    """3 stages × n blocks with 16/32/64 channels, global average pool, one linear layer."""

    def __init__(
        self,
        depth: int = 20,
        *,
        shortcut: Shortcut = "identity",
        in_channels: int = 3,
        num_classes: int = 10,
        widths: tuple[int, int, int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise SpecError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (20, 32, …), got {depth}")
        if shortcut not in SHORTCUTS:
            raise UnknownNameError("shortcut", shortcut, SHORTCUTS)
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages: list[nn.Module] = []
        in_planes = widths[0]
        for index, planes in enumerate(widths):
            blocks = []
            for block in range(n):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(BasicBlock(in_planes, planes, stride, shortcut))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(widths[-1], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        logits: Tensor = self.fc(out)
        return logits


def _register(depth: int) -> None:
    @register_model(f"resnet{depth}", f"CIFAR ResNet-{depth} (He et al. 2016 §4.2)")
    def residual(
        *,
        in_channels: int,
        num_classes: int,
        image_size: int,
        shortcut: Literal["identity", "projection"] = "identity",
    ) -> nn.Module:
        del image_size  # global average pooling makes the net size-agnostic
        if shortcut not in ("identity", "projection"):
            raise UnknownNameError("shortcut", shortcut, ["identity", "projection"])
        return CifarResNet(
            depth, shortcut=shortcut, in_channels=in_channels, num_classes=num_classes
        )

    @register_model(
        f"resnet{depth}-noshort",
        f"ResNet-{depth} without shortcuts: the plain net of Li et al. 2018",
    )
    def plain(*, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
        del image_size
        return CifarResNet(depth, shortcut="none", in_channels=in_channels, num_classes=num_classes)


for _depth in (20, 32, 44, 56, 110):
    _register(_depth)
