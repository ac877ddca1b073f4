"""Highway networks (Srivastava et al. 2015), and the same nets without the carry path.

A highway layer computes ``y = T(x)·H(x) + (1 − T(x))·x`` with a learned transform
``H(x) = ReLU(W_H x + b_H)`` and a sigmoid *transform gate* ``T(x) = σ(W_T x + b_T)``: where
the gate is closed the layer copies its input, so the identity path is there from the first
step and the learned layer only perturbs it. ResNet's shortcut (He et al. 2016) is the same
construction with the gate fixed open on both paths (``y = H(x) + x``). The gate's bias starts
negative (``gate_bias``, default −2; Srivastava et al. §2.2 use −1 to −3 so that deep nets
start close to carrying), which makes ``T ≈ 0.12`` at initialization.

The nets are fully connected on the flattened image, as the paper's MNIST nets (§4.1): one
plain first layer to ``width`` units, ``depth − 1`` highway layers, a linear classifier. The
plain twin ``highway-<depth>-noshort`` has the same layers without the gate and the carry,
``y = H(x)``: it is the gate's ``W_T``, ``b_T`` (one ``width × width`` linear layer per layer)
that the twin lacks. Srivastava et al. widen their plain nets to 71 units to match the
parameter count (``width=71``); here both default to the paper's 50.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.errors import SpecError
from landscape.models.registry import register_model

DEPTHS = (10, 20, 50, 100)  # Srivastava et al. 2015, Fig. 1
DEFAULT_WIDTH = 50  # §4.1: "each layer had 50 blocks for highway networks"
DEFAULT_GATE_BIAS = -2.0
# Bounds of the model arguments (``register_model``): widths as the MLPs'; beyond ±10 the
# sigmoid gate is saturated, shut or open, from the first step.
ARG_RANGES = {"width": (1, 1024), "gate_bias": (-10.0, 10.0)}


class HighwayLayer(nn.Module):
    """``T·H + (1 − T)·x`` when gated, else ``H`` (the plain layer)."""

    def __init__(self, width: int, *, gated: bool, gate_bias: float) -> None:
        super().__init__()
        self.transform = nn.Linear(width, width)
        self.gate: nn.Linear | None = nn.Linear(width, width) if gated else None
        nn.init.kaiming_normal_(self.transform.weight, nonlinearity="relu")  # He et al. 2015
        nn.init.zeros_(self.transform.bias)
        if self.gate is not None:  # default (fan-in uniform) weights: the gate is a sigmoid
            nn.init.constant_(self.gate.bias, gate_bias)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.transform(x))
        if self.gate is None:
            return h
        t = torch.sigmoid(self.gate(x))
        return t * h + (1 - t) * x


class HighwayNet(nn.Module):
    """Flatten → Linear-ReLU to ``width`` → ``depth − 1`` (highway or plain) layers → Linear."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        depth: int,
        width: int,
        gated: bool,
        gate_bias: float = DEFAULT_GATE_BIAS,
    ) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 2:
            raise SpecError(f"highway depth must be an integer >= 2, got {depth!r}")
        if not isinstance(width, int) or width < 1:
            raise SpecError(f"highway width must be an integer >= 1, got {width!r}")
        self.stem = nn.Linear(in_features, width)
        nn.init.kaiming_normal_(self.stem.weight, nonlinearity="relu")
        nn.init.zeros_(self.stem.bias)
        self.layers = nn.Sequential(
            *(HighwayLayer(width, gated=gated, gate_bias=gate_bias) for _ in range(depth - 1))
        )
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.stem(torch.flatten(x, 1)))
        logits: Tensor = self.head(self.layers(out))
        return logits


def _register(depth: int) -> None:
    @register_model(
        f"highway-{depth}",
        f"Highway net of {depth} fully connected layers, carry gate T·H + (1−T)·x "
        f"(Srivastava et al. 2015; width, gate_bias); plain twin highway-{depth}-noshort",
        arg_ranges=ARG_RANGES,
    )
    def highway(
        *,
        in_channels: int,
        num_classes: int,
        image_size: int,
        width: int = DEFAULT_WIDTH,
        gate_bias: float = DEFAULT_GATE_BIAS,
    ) -> nn.Module:
        features = in_channels * image_size * image_size
        return HighwayNet(
            features, num_classes, depth=depth, width=width, gated=True, gate_bias=gate_bias
        )

    @register_model(
        f"highway-{depth}-noshort",
        f"highway-{depth} without gate and carry, y = H(x): its plain twin (width)",
        arg_ranges=ARG_RANGES,
    )
    def plain(
        *,
        in_channels: int,
        num_classes: int,
        image_size: int,
        width: int = DEFAULT_WIDTH,
        gate_bias: float = DEFAULT_GATE_BIAS,
    ) -> nn.Module:
        del gate_bias  # no gate to bias: accepted so one set of model arguments builds both twins
        features = in_channels * image_size * image_size
        return HighwayNet(features, num_classes, depth=depth, width=width, gated=False)


for _depth in DEPTHS:
    _register(_depth)
