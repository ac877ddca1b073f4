"""Which axes of the zoo's nets one hidden-unit permutation acts on (``weight_matching``).

A permutation of a layer's units moves the rows of the weights (and bias, BN entries) into
it and the columns of the weights out of it. Where an identity shortcut adds a layer's input
to its output, both are one *residual stream* and share one permutation through every block;
He et al.'s option-A shortcut zero-pads the stream where a stage widens, so the wider stream
carries the narrower one in its middle channels (permuted as before) and the padded channels
take a permutation of their own (Ainsworth et al. 2022 tie their ResNets' residual streams
the same way). ``align_state`` is the one call: θ₂ permuted onto θ₁, and what was done.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import Tensor, nn

from landscape.analysis.weight_matching import (
    Axis,
    PermutationSpec,
    State,
    permute_state,
    weight_matching,
)
from landscape.errors import SpecError
from landscape.models.mlp import MLP, MLPBlock
from landscape.models.resnet import BasicBlock, CifarResNet

# A stream's channels: (permutation name, its positions along the channel axis).
Stream = list[tuple[str, tuple[int, ...]]]
_BN_PARAMS = ("weight", "bias")
_BN_BUFFERS = ("running_mean", "running_var")


def permutation_spec(model: nn.Module) -> PermutationSpec:
    """The spec of a zoo MLP or CIFAR ResNet; other nets are refused by name."""
    if isinstance(model, MLP):
        return mlp_spec(model)
    if isinstance(model, CifarResNet):
        return resnet_spec(model)
    raise SpecError(
        f"weight matching knows the zoo's MLPs (mlp-plain, mlp-residual) and CIFAR ResNets "
        f"(resnetN, resnetN-noshort), not {type(model).__name__}"
    )


def _add(spec: PermutationSpec, stream: Stream, key: str, axis: int, counts: bool = True) -> None:
    for name, positions in stream:
        spec.setdefault(name, []).append(Axis(key, axis, positions, counts))


def _whole(name: str, width: int) -> Stream:
    return [(name, tuple(range(width)))]


def mlp_spec(model: MLP) -> PermutationSpec:
    """Stem → blocks of fc1, fc2 → head: each fc1's units are their own; the stream (stem and
    each fc2's outputs) is one permutation when the blocks add their input back."""
    spec: PermutationSpec = {}
    width = model.stem.out_features
    blocks = [b for b in model.blocks if isinstance(b, MLPBlock)]
    residual = bool(blocks) and blocks[0].residual
    stream = _whole("residual" if residual else "stem", width)
    _add(spec, stream, "stem.weight", 0)
    _add(spec, stream, "stem.bias", 0)
    for index, block in enumerate(blocks):
        prefix = f"blocks.{index}"
        hidden = _whole(f"{prefix}.fc1", block.fc1.out_features)
        _add(spec, stream, f"{prefix}.fc1.weight", 1)
        _add(spec, hidden, f"{prefix}.fc1.weight", 0)
        _add(spec, hidden, f"{prefix}.fc1.bias", 0)
        _add(spec, hidden, f"{prefix}.fc2.weight", 1)
        if not residual:
            stream = _whole(f"{prefix}.fc2", block.fc2.out_features)
        _add(spec, stream, f"{prefix}.fc2.weight", 0)
        _add(spec, stream, f"{prefix}.fc2.bias", 0)
    _add(spec, stream, "head.weight", 1)
    return spec


def _conv_bn(spec: PermutationSpec, stream: Stream, conv: str, bn: str) -> None:
    """A conv's output channels and the BN after it."""
    _add(spec, stream, f"{conv}.weight", 0)
    for name in _BN_PARAMS:
        _add(spec, stream, f"{bn}.{name}", 0)
    for name in _BN_BUFFERS:
        _add(spec, stream, f"{bn}.{name}", 0, counts=False)


def _widened(stream: Stream, old: int, new: int, name: str) -> Stream:
    """Option A's zero padding: the old stream in the middle, the new channels around it."""
    offset = (new - old) // 2
    moved = [(n, tuple(p + offset for p in pos)) for n, pos in stream]
    padded = tuple(range(offset)) + tuple(range(offset + old, new))
    return [*moved, (name, padded)]


def resnet_spec(model: CifarResNet) -> PermutationSpec:
    """Without shortcuts every conv's channels are their own; with them the stream after
    the stem runs through each stage, widened (option A) or re-projected (option B) where
    the stage widens."""
    spec: PermutationSpec = {}
    blocks = [
        (name, module) for name, module in model.named_modules() if isinstance(module, BasicBlock)
    ]
    width = model.conv1.out_channels
    stream = _whole("conv1", width)
    _conv_bn(spec, stream, "conv1", "bn1")
    for prefix, block in blocks:
        planes = block.conv2.out_channels
        _add(spec, stream, f"{prefix}.conv1.weight", 1)
        hidden = _whole(f"{prefix}.conv1", block.conv1.out_channels)
        _conv_bn(spec, hidden, f"{prefix}.conv1", f"{prefix}.bn1")
        _add(spec, hidden, f"{prefix}.conv2.weight", 1)
        if block.shortcut_kind == "none":
            stream = _whole(f"{prefix}.conv2", planes)
        elif block.projection is not None:
            _add(spec, stream, f"{prefix}.projection.0.weight", 1)
            stream = _whole(f"{prefix}.projection", planes)
            _conv_bn(spec, stream, f"{prefix}.projection.0", f"{prefix}.projection.1")
        elif planes != width:
            stream = _widened(stream, width, planes, f"{prefix}.padded")
        _conv_bn(spec, stream, f"{prefix}.conv2", f"{prefix}.bn2")
        width = planes
    _add(spec, stream, "fc.weight", 1)
    return spec


def _inner(a: Mapping[str, Tensor], b: Mapping[str, Tensor], keys: list[str]) -> float:
    return float(sum(float((a[k].double() * b[k].double()).sum()) for k in keys))


def align_state(
    model: nn.Module, a: Mapping[str, Tensor], b: Mapping[str, Tensor], *, seed: int = 0
) -> tuple[State, dict[str, Any]]:
    """``b`` permuted onto ``a`` (two states of ``model``'s architecture), and what was done:
    the permutations' count and units, the rounds, and the objective ``Σ⟨θ_A, θ_B⟩`` over the
    parameters before and after."""
    spec = permutation_spec(model)
    perms, rounds = weight_matching(spec, a, b, seed=seed)
    aligned = permute_state(b, spec, perms)
    keys = [n for n, _ in model.named_parameters()]
    moved = sum(int((p != np.arange(len(p))).sum()) for p in perms.values())
    info = {
        "method": "weight matching (Ainsworth et al. 2022)",
        "permutations": len(perms),
        "units": int(sum(len(p) for p in perms.values())),
        "units_moved": moved,
        "rounds": rounds,
        "seed": seed,
        "objective_before": _inner(a, b, keys),
        "objective_after": _inner(a, aligned, keys),
    }
    return aligned, info
