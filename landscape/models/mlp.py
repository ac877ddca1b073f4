"""Fully connected nets: the smallest setting in which shortcuts change the landscape.

Both variants share one class; ``residual`` toggles the identity add around each
Linear-ReLU-Linear block, so ``mlp-plain`` and ``mlp-residual`` have identical parameters.
``activation="tanh"`` swaps every ReLU for tanh: the smooth nets Cohen et al. 2021 train to the
edge of stability (docs/sharpness.md). ``init="torch"`` keeps PyTorch's default Linear init
instead of He's: a net that starts flat enough to sharpen progressively. Flattening makes
both take images and 1-D signals alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, cast, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.errors import SpecError
from landscape.models.registry import register_model

Activation = Literal["relu", "tanh"]
Init = Literal["he", "torch"]
_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "tanh": torch.tanh}


class MLPBlock(nn.Module):
    """Linear-act-Linear, with the input added back when ``residual``; the activation after."""

    def __init__(self, width: int, residual: bool, activation: Activation = "relu") -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.residual = residual
        self.act = _ACTIVATIONS[activation]

    def forward(self, x: Tensor) -> Tensor:
        out = self.fc2(self.act(self.fc1(x)))
        return self.act(x + out if self.residual else out)


class MLP(nn.Module):
    """Flatten → Linear to ``width`` → ``depth`` blocks → Linear to the classes."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        depth: int,
        width: int,
        residual: bool,
        activation: str = "relu",
        init: str = "he",
    ) -> None:
        super().__init__()
        if init not in get_args(Init):
            raise SpecError(f"MLP init must be one of {list(get_args(Init))}, got {init!r}")
        if activation not in get_args(Activation):
            raise SpecError(
                f"MLP activation must be one of {list(get_args(Activation))}, got {activation!r}"
            )
        if not isinstance(depth, int) or depth < 1:
            raise SpecError(f"MLP depth (number of blocks) must be an integer >= 1, got {depth!r}")
        if not isinstance(width, int) or width < 1:
            raise SpecError(f"MLP width must be an integer >= 1, got {width!r}")
        self.stem = nn.Linear(in_features, width)
        act = cast(Activation, activation)
        self.blocks = nn.Sequential(*(MLPBlock(width, residual, act) for _ in range(depth)))
        self.head = nn.Linear(width, num_classes)
        self.act = _ACTIVATIONS[act]
        if init == "he":
            self._init_he(act, residual, depth)

    def _init_he(self, act: Activation, residual: bool, depth: int) -> None:
        """He et al. 2015's init, the branch scaled by 1/√depth in residual nets."""
        # He et al. 2015 init for ReLU nets: PyTorch's default Linear init shrinks the signal
        # by ~√3 per layer, so a plain MLP starts with vanishing activations and stalls; tanh
        # gets its own gain (5/3), which keeps it out of saturation.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, nonlinearity=act)
                nn.init.zeros_(module.bias)
        if residual:
            # Each identity add doubles the signal's variance; scaling the branch's last layer
            # by 1/√depth keeps the sum bounded (as GPT-2 scales its residual projections).
            for block in self.blocks:
                with torch.no_grad():
                    cast(MLPBlock, block).fc2.weight.mul_(depth**-0.5)
        # "torch": PyTorch's default U(±1/√fan_in) — it shrinks the signal layer by layer, so a
        # tanh net starts nearly linear and flat, and gradient descent sharpens it (Cohen et
        # al. 2021 use it: docs/sharpness.md); the He init starts it above 2/η of usable η.

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.stem(torch.flatten(x, 1)))
        logits: Tensor = self.head(self.blocks(out))
        return logits


# Wide enough for every experiment here; the service's budgets (parameters, memory, FLOPs)
# then decide what a deployment runs. A width of 10⁴ would be 10⁸ weights per layer.
ARG_RANGES = {"depth": (1, 64), "width": (1, 1024)}


@register_model(
    "mlp-plain",
    "MLP of Linear-ReLU-Linear blocks, no shortcuts (depth, width, activation relu|tanh, "
    "init he|torch)",
    arg_ranges=ARG_RANGES,
    spatial_dims=(1, 2),
)
def mlp_plain(
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    spatial_dims: int = 2,
    depth: int = 4,
    width: int = 128,
    activation: str = "relu",
    init: str = "he",
) -> nn.Module:
    features = in_channels * image_size**spatial_dims
    return MLP(features, num_classes, depth=depth, width=width, residual=False,
               activation=activation, init=init)  # fmt: skip


@register_model(
    "mlp-residual",
    "MLP of Linear-ReLU-Linear blocks with identity adds",
    arg_ranges=ARG_RANGES,
    spatial_dims=(1, 2),
)
def mlp_residual(
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    spatial_dims: int = 2,
    depth: int = 4,
    width: int = 128,
    activation: str = "relu",
    init: str = "he",
) -> nn.Module:
    features = in_channels * image_size**spatial_dims
    return MLP(features, num_classes, depth=depth, width=width, residual=True,
               activation=activation, init=init)  # fmt: skip
