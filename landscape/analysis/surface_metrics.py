"""Scalar summaries of a complete surface: sharpness, roughness, convexity (docs/format.md).

Computed from the grid alone, so the surface computation, the golden-file maker and any reader
of an old file get the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

SHARPNESS_RADIUS = 0.25  # in direction units; at least one grid step (see docs/format.md)


def surface_metrics(
    x: np.ndarray,
    y: np.ndarray | None,
    values: Mapping[str, np.ndarray],
    metric_names: tuple[str, ...] | None = None,
) -> dict[str, float]:
    """Scalar summaries of a complete grid, per metric (definitions in docs/format.md).

    Every metric gets ``_min``, ``_max`` and ``_center``; losses also get sharpness, roughness
    and convexity numbers. The first loss's are repeated without prefix (``sharpness``, …) as
    the surface's headline numbers.
    """
    names = metric_names or tuple(values)
    center = _center_index(x, y)
    out: dict[str, float] = {}
    headline: str | None = None
    for name in names:
        v = np.asarray(values[name], dtype=np.float64)
        out[f"{name}_min"] = float(np.nanmin(v)) if np.isfinite(v).any() else math.nan
        out[f"{name}_max"] = float(np.nanmax(v)) if np.isfinite(v).any() else math.nan
        out[f"{name}_center"] = float(v[center])
        if name.endswith("_loss"):
            headline = headline or name
            for key, value in _loss_shape_metrics(x, y, v, center).items():
                out[f"{name}_{key}"] = value
    if headline is not None:
        for key in ("sharpness", "sharpness_mean", "roughness", "convex_fraction"):
            out[key] = out[f"{headline}_{key}"]
    out["sharpness_radius"] = _sharpness_radius(x, y)
    return out


def _center_index(x: np.ndarray, y: np.ndarray | None) -> tuple[int, ...]:
    """The grid point nearest the origin (the checkpoint itself when the range spans 0)."""
    i = int(np.argmin(np.abs(x)))
    return (i,) if y is None else (int(np.argmin(np.abs(y))), i)


def _sharpness_radius(x: np.ndarray, y: np.ndarray | None) -> float:
    steps = [np.min(np.diff(a)) for a in (x, y) if a is not None and len(a) > 1]
    return float(max([SHARPNESS_RADIUS, *steps]))


def _loss_shape_metrics(
    x: np.ndarray, y: np.ndarray | None, v: np.ndarray, center: tuple[int, ...]
) -> dict[str, float]:
    f0 = float(v[center])
    radius = _sharpness_radius(x, y)
    if y is None:
        dist = np.abs(x - x[center[0]])
    else:
        xx, yy = np.meshgrid(x - x[center[1]], y - y[center[0]])  # (ny, nx)
        dist = np.hypot(xx, yy)
    near = v[(dist <= radius + 1e-12) & (dist > 0)]
    near = near[np.isfinite(near)]
    # Keskar et al. 2017, eq. 4: ε-sharpness = (max f(θ+δ) − f(θ)) / (1 + f(θ)) · 100
    sharp = 100 * (near.max() - f0) / (1 + f0) if near.size else math.nan
    sharp_mean = 100 * (near.mean() - f0) / (1 + f0) if near.size else math.nan

    span = float(np.nanmax(v) - np.nanmin(v)) if np.isfinite(v).any() else math.nan
    # Roughness: third differences vanish on any locally quadratic surface (a smooth bowl or
    # saddle scores 0) and grow with wiggles and noise; scaled by the value range.
    third = [np.abs(np.diff(v, n=3, axis=k)).ravel() for k in range(v.ndim) if v.shape[k] >= 4]
    first = [np.abs(np.diff(v, axis=k)).ravel() for k in range(v.ndim) if v.shape[k] > 1]
    rough = _safe_mean(third) / span if span > 0 else 0.0
    tv = _safe_mean(first) / span if span > 0 else 0.0
    convex, ratio = _convexity(x, y, v)
    return {
        "sharpness": float(sharp),
        "sharpness_mean": float(sharp_mean),
        "roughness": float(rough),
        "total_variation": float(tv),
        "convex_fraction": convex,
        "nonconvexity": ratio,
    }


def _safe_mean(parts: list[np.ndarray]) -> float:
    joined = np.concatenate(parts) if parts else np.zeros(0)
    joined = joined[np.isfinite(joined)]
    return float(joined.mean()) if joined.size else math.nan


def _convexity(x: np.ndarray, y: np.ndarray | None, v: np.ndarray) -> tuple[float, float]:
    """Fraction of interior points whose finite-difference Hessian is positive semidefinite,
    and the mean of |min(λ_min, 0)| / max|λ| there: 0 where the plane is locally convex, up
    to 1 at a saddle as curved down as up (the in-plane analogue of Li et al. 2018, §6,
    |λ_min/λ_max| of the full Hessian)."""
    if y is None:
        if len(x) < 3:
            return math.nan, math.nan
        h = np.diff(x)[0]
        fxx = (v[2:] - 2 * v[1:-1] + v[:-2]) / h**2
        fxx = fxx[np.isfinite(fxx)]
        if not fxx.size:
            return math.nan, math.nan
        return float(np.mean(fxx >= 0)), float(np.mean(fxx < 0))
    if len(x) < 3 or len(y) < 3:
        return math.nan, math.nan
    hx, hy = np.diff(x)[0], np.diff(y)[0]
    c = v[1:-1, 1:-1]
    fxx = (v[1:-1, 2:] - 2 * c + v[1:-1, :-2]) / hx**2
    fyy = (v[2:, 1:-1] - 2 * c + v[:-2, 1:-1]) / hy**2
    fxy = (v[2:, 2:] - v[2:, :-2] - v[:-2, 2:] + v[:-2, :-2]) / (4 * hx * hy)
    hess = np.stack([np.stack([fxx, fxy], -1), np.stack([fxy, fyy], -1)], -2).reshape(-1, 2, 2)
    hess = hess[np.isfinite(hess).all(axis=(1, 2))]
    if not len(hess):
        return math.nan, math.nan
    eig = np.linalg.eigvalsh(hess)  # ascending: [:, 0] = λ_min, [:, 1] = λ_max
    scale = np.maximum(np.abs(eig).max(axis=1), 1e-300)
    negative = np.abs(np.minimum(eig[:, 0], 0.0)) / scale
    convex = float(np.mean(negative <= 1e-9))
    return convex, float(negative.mean())
