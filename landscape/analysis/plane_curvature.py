"""The plotted plane's own curvature, set against the whole Hessian's.

A surface shows the loss along two directions δ, η; its curvature at the centre along δ is
``δᵀHδ/‖δ‖²``. For a random Gaussian direction that is on average the *mean* curvature
``tr(H)/n`` (Böttcher & Wheeler 2022, "Visualizing high-dimensional loss landscapes with Hessian
directions"): ``δ/‖δ‖`` is uniform on the sphere, and ``E[uᵀHu] = tr(H)/n`` there. So a random
plane looks like a bowl whenever the mean curvature is positive, however negative ``λ_min`` is:
the figures here say how far the picture is from the extremes only other directions show.

Per axis, two independent figures: one Hessian-vector product at θ (the analysis's loss, data,
eval mode and parameter subset), and the stored surface's second difference through its centre
(its own loss values and data), which agrees with the first to ``O(h²)`` in the grid step ``h``
when both see the same data. Filter-normalized directions are not isotropic, so "on average
``tr(H)/n``" is a rough guide for them, not an identity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from landscape.analysis.hessian import HessianOperator
from landscape.storage import Surface

AXES = ("x", "y", "z")
MIN_EIGENVECTOR_PLANE = "--directions hessian --hessian-ends min"


@dataclass(frozen=True)
class PlaneCurvature:
    """Per plotted axis (x, y, … in order): the curvature at the centre two ways."""

    hessian: np.ndarray  # δᵀHδ/‖δ_P‖², δ_P: δ on the Hessian's parameters
    finite_difference: np.ndarray  # f''(0)/‖δ‖² from the surface; NaN without a centre
    step: np.ndarray  # the grid step h in the axis coordinate used by the difference; NaN
    norm: np.ndarray  # ‖δ‖ over every parameter (the surface moves along all of δ)
    norm_params: np.ndarray  # ‖δ_P‖, over the Hessian's parameters alone
    metric: str | None  # the surface dataset differenced, e.g. "train_loss"
    directions: str  # the surface's direction kind, e.g. "random"
    matvecs: int


def axis_curvatures(
    operator: HessianOperator, directions: Sequence[Mapping[str, Tensor]]
) -> tuple[np.ndarray, np.ndarray]:
    """``δᵀHδ/‖δ‖²`` per direction by one product each at the operator's point, over its
    parameters (a direction's other components are dropped: ``H`` is that block), and ``‖δ‖``
    on those parameters."""
    values, norms = [], []
    for direction in directions:
        parts = [direction.get(name) for name in operator.shapes]
        flat = operator.flatten([None if t is None else t.to(operator.device) for t in parts])
        flat = flat.cpu()
        v = flat.numpy().astype(np.float64)
        squared = float(v @ v)
        hv = operator.matvec(v)
        values.append(float(v @ hv) / squared if squared > 0 else math.nan)
        norms.append(math.sqrt(squared))
    return np.array(values), np.array(norms)


def centre_index(coords: np.ndarray) -> int | None:
    """The grid index whose coordinate is 0 (to rounding), when it has a neighbour each side."""
    coords = np.asarray(coords, dtype=np.float64)
    if len(coords) < 3:
        return None
    i = int(np.argmin(np.abs(coords)))
    span = float(coords.max() - coords.min())
    if abs(coords[i]) > 1e-9 * max(span, 1.0) or not 0 < i < len(coords) - 1:
        return None
    return i


def second_differences(surface: Surface, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """``f''(0)`` along each axis through the grid's centre from the stored ``metric`` (three
    points: the centre and its two neighbours, the three-point formula for unequal steps), and
    the step used (the mean of the two); NaN on an axis where the grid has no centre point or
    one of the three is not computed."""
    axes = (surface.x, surface.y, surface.z)[: surface.ndim]
    coords = [c for c in axes if c is not None]
    values = np.asarray(surface.values[metric], dtype=np.float64)  # (…, ny, nx): x is last
    found = [centre_index(c) for c in coords]
    curvature, steps = np.full(len(coords), np.nan), np.full(len(coords), np.nan)
    centre = [i for i in found if i is not None]
    if len(centre) < len(coords):
        return curvature, steps
    for axis, (c, i) in enumerate(zip(coords, centre, strict=True)):
        index = centre[::-1]  # values are indexed [z, y, x]
        dim = len(coords) - 1 - axis
        f = []
        for k in (i - 1, i, i + 1):
            index[dim] = k
            f.append(values[tuple(index)])
        h_minus, h_plus = float(c[i] - c[i - 1]), float(c[i + 1] - c[i])
        # the second derivative of the parabola through the three points
        bend = h_minus * f[2] - (h_minus + h_plus) * f[1] + h_plus * f[0]
        curvature[axis] = 2 * bend / (h_minus * h_plus * (h_minus + h_plus))
        steps[axis] = (h_minus + h_plus) / 2
    return curvature, steps


def plane_curvature(
    operator: HessianOperator,
    directions: Sequence[Mapping[str, Tensor]],
    surface: Surface,
    *,
    split: str,
    loss: str,
) -> PlaneCurvature:
    """Both figures for each of the surface's axes. The difference uses ``{split}_loss`` when
    the surface stores it and was computed with the same ``loss``; otherwise it is NaN."""
    start = operator.matvecs
    hessian, norm_params = axis_curvatures(operator, directions)
    norms = np.array(
        [math.sqrt(sum(float((t.double() ** 2).sum()) for t in d.values())) for d in directions]
    )
    metric: str | None = f"{split}_loss"
    if metric not in surface.values or surface.spec.loss != loss:
        metric = None
    if metric is None:
        fd, steps = np.full(len(directions), np.nan), np.full(len(directions), np.nan)
    else:
        second, steps = second_differences(surface, metric)
        with np.errstate(divide="ignore", invalid="ignore"):
            fd = second / norms**2
    return PlaneCurvature(
        hessian=hessian,
        finite_difference=fd,
        step=steps,
        norm=norms,
        norm_params=norm_params,
        metric=metric,
        directions=surface.spec.directions.kind,
        matvecs=operator.matvecs - start,
    )


def plane_arrays(plane: PlaneCurvature) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The ``plane_*`` datasets and attrs of the ``hessian/`` group (docs/format.md)."""
    arrays = {
        "plane_curvature": plane.hessian,
        "plane_curvature_fd": plane.finite_difference,
        "plane_curvature_step": plane.step,
        "plane_direction_norm": plane.norm,
        "plane_direction_norm_params": plane.norm_params,
    }
    attrs: dict[str, Any] = {
        "plane_directions": plane.directions,
        "plane_curvature_matvecs": plane.matvecs,
    }
    if plane.metric is not None:
        attrs["plane_curvature_metric"] = plane.metric
    return arrays, attrs


def plane_summary(
    arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The stored figures beside ``tr(H)/n``, ``λ_min``, ``λ_max`` and the sentence; None
    when the group has none (no surface, or a file written before they were recorded)."""
    if "plane_curvature" not in arrays:
        return None
    hessian = [float(v) for v in np.asarray(arrays["plane_curvature"])]
    trace, n = attrs.get("trace"), attrs.get("n_params")
    top, bottom = arrays.get("top_eigenvalues"), arrays.get("bottom_eigenvalues")
    summary: dict[str, Any] = {
        "axes": list(AXES[: len(hessian)]),
        "hessian": hessian,
        "finite_difference": [float(v) for v in arrays["plane_curvature_fd"]],
        "step": [float(v) for v in arrays["plane_curvature_step"]],
        "norm": [float(v) for v in arrays["plane_direction_norm"]],
        "norm_params": [float(v) for v in arrays["plane_direction_norm_params"]],
        "metric": attrs.get("plane_curvature_metric"),
        "directions": attrs.get("plane_directions"),
        "mean_curvature": float(trace) / int(n) if trace is not None and n else None,
        "lambda_min": float(bottom[0]) if bottom is not None and len(bottom) else None,
        "lambda_max": float(top[0]) if top is not None and len(top) else None,
    }
    summary["sentence"] = plane_sentence(summary)
    return summary


def _g(value: float) -> str:
    """Three significant figures, with a true minus sign (as the page prints numbers)."""
    return f"{value:.3g}".replace("-", "−")


def plane_sentence(summary: Mapping[str, Any]) -> str:
    """One sentence on what the plotted plane can and cannot show, from ``plane_summary``'s
    numbers; the CLI prints it and the API sends it, so both say the same words."""
    axes = [
        f"{_g(v)} along {axis}"
        for axis, v in zip(summary["axes"], summary["hessian"], strict=True)
        if math.isfinite(v)
    ]
    plane = "This plane's curvature at the centre is " + (" and ".join(axes) or "unknown")
    mean = summary.get("mean_curvature")
    if mean is None:
        plane += " (tr(H)/n not computed: run with --trace)"
    elif summary.get("directions") == "random":
        plane += f", against tr(H)/n = {_g(mean)} (what a random direction shows on average)"
    else:
        plane += f", against the mean curvature tr(H)/n = {_g(mean)}"
    low, high = summary.get("lambda_min"), summary.get("lambda_max")
    top = f" (λmax = {_g(high)})" if high is not None else ""
    if low is None:
        return plane + f"; λmin was not computed{top} (run with --bottom 1)."
    if summary.get("directions") != "random":  # the plane may be an eigenvector's own
        high_text = f" and λmax = {_g(high)}" if high is not None else ""
        return plane + f"; the Hessian's extremes are λmin = {_g(low)}{high_text}."
    if low < 0:
        return (
            plane + f"; the Hessian also has λmin = {_g(low)}{top}, which no random plane will "
            f"show — see the min-eigenvector plane ({MIN_EIGENVECTOR_PLANE})."
        )
    return plane + f"; λmin = {_g(low)}{top} is not negative: no direction found curves down."
