"""The plane through three checkpoints of one architecture (Garipov et al. 2018, §3 and Fig. 1:
the loss over the plane spanned by three trained networks).

Axes by Gram–Schmidt, in parameter units: with ``u = θ₂ − θ₁`` and ``w = θ₃ − θ₁``,
``x̂ = u/‖u‖`` and ``ŷ = v/‖v‖`` with ``v = w − ⟨w, x̂⟩ x̂``; the grid point ``(x, y)`` is
``θ₁ + x·x̂ + y·ŷ``. Both axes are unit vectors, so distances on the plot are Euclidean
distances between weight vectors, and the three nets sit at

    θ₁ (0, 0),   θ₂ (‖u‖, 0),   θ₃ (⟨w, x̂⟩, ‖v‖).

The plane is over parameters only, BN affine included: BN running statistics are buffers and
are θ₁'s at every point, so on a BN net the loss drawn at θ₂ and θ₃ is not their own (their
weights with θ₁'s statistics); ``landscape interpolate --bn recompute`` re-estimates them.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from landscape.errors import CheckpointError, SpecError

Direction = dict[str, Tensor]

# An axis shorter than this, relative to ‖θ₁‖, is two copies of one net (or three nets on a line)
_DEGENERATE = 1e-6
MARGIN = 0.2  # the automatic range extends the three points' extent by 20 % on each side


def three_point_directions(
    params: Mapping[str, Tensor],
    second: Mapping[str, Tensor],
    third: Mapping[str, Tensor],
    *,
    names: Sequence[str] = ("first", "second", "third"),
    only: Collection[str] | None = None,
) -> tuple[list[Direction], dict[str, Any]]:
    """The unit axes ``x̂, ŷ`` of the plane through ``params`` (θ₁), ``second`` and ``third``
    and provenance whose ``points`` are the three nets' coordinates (``names`` label them).

    Computed in float64 and stored in the parameters' dtype. With ``only`` (a subset of
    names) the plane is the subset's: the other components are zero, so the points are the
    other nets' weights on the subset, θ₁'s elsewhere. Two equal nets, or three on one line,
    span no plane: a ``SpecError``.
    """
    for label, other in zip(names[1:], (second, third), strict=True):
        _check_shapes(params, other, label)
    kept = [n for n in params if only is None or n in only]

    def flat(other: Mapping[str, Tensor]) -> Tensor:
        return torch.cat([(other[n].double() - params[n].double()).flatten().cpu() for n in kept])

    u, w = flat(second), flat(third)
    scale = float(torch.cat([params[n].double().flatten().cpu() for n in kept]).norm())
    u_norm = float(u.norm())
    if u_norm <= _DEGENERATE * max(scale, 1.0):
        raise SpecError(
            f"three_point: {names[1]} has the same weights as {names[0]}; the plane needs "
            "three different checkpoints"
        )
    x_hat = u / u_norm
    along = float(w @ x_hat)
    v = w - along * x_hat
    v = v - float(v @ x_hat) * x_hat  # a second pass: x̂ ⟂ ŷ to float64 rounding
    v_norm = float(v.norm())
    if v_norm <= _DEGENERATE * max(scale, 1.0):
        raise SpecError(
            f"three_point: {names[2]} lies on the line through {names[0]} and {names[1]}; "
            "the three checkpoints span no plane"
        )
    y_hat = v / v_norm
    dirs = [_unflatten(axis, params, kept) for axis in (x_hat, y_hat)]
    coords = [(0.0, 0.0), (u_norm, 0.0), (along, v_norm)]
    info: dict[str, Any] = {
        "points": [
            {"name": name, "x": x, "y": y} for name, (x, y) in zip(names, coords, strict=True)
        ],
    }
    return dirs, info


def _check_shapes(params: Mapping[str, Tensor], other: Mapping[str, Tensor], label: str) -> None:
    """The same architecture: every parameter by name, of the same shape."""
    for name, p in params.items():
        if tuple(other[name].shape) != tuple(p.shape):
            raise CheckpointError(
                f"three_point: parameter {name!r} has shape {tuple(other[name].shape)} in "
                f"{label}, {tuple(p.shape)} in the checkpoint; the three nets must share one "
                "architecture"
            )


def _unflatten(vector: Tensor, params: Mapping[str, Tensor], kept: Sequence[str]) -> Direction:
    out: Direction = {}
    offset = 0
    for name, p in params.items():
        if name in kept:
            chunk = vector[offset : offset + p.numel()].view(p.shape)
            out[name] = chunk.to(device=p.device, dtype=p.dtype)
            offset += p.numel()
        else:
            out[name] = torch.zeros_like(p)
    return out


def plane_ranges(
    points: Sequence[Mapping[str, Any]], margin: float = MARGIN
) -> list[tuple[float, float]]:
    """The x and y ranges holding the three points with ``margin`` of each axis's extent on
    either side (the y extent stands in for a zero x extent and vice versa)."""
    xs = [float(p["x"]) for p in points]
    ys = [float(p["y"]) for p in points]
    extents = [max(xs) - min(xs), max(ys) - min(ys)]
    ranges = []
    for values, extent in zip((xs, ys), extents, strict=True):
        pad = margin * (extent if extent > 0 else max(extents))
        ranges.append((min(values) - pad, max(values) + pad))
    if not all(math.isfinite(v) for r in ranges for v in r):
        raise SpecError(f"three_point: the checkpoints' coordinates are not finite: {points}")
    return ranges
