"""Numbers that say whether a loss surface is a clean bowl or chaotic, invariant to its scale.

A plain deep net's loss can climb a million-fold over the plotted range while a residual net's
climbs ten-fold; metrics scaled by the value range (roughness, sharpness) then mostly measure
that range. These are unchanged by any increasing transform of the loss (log, affine), so
they compare shapes, not heights:

- ``curvature_nonconvex_fraction`` (Li et al. 2018 §6, Fig. 7), from a curvature map of the
  full Hessian: the fraction of map points where ``r = |min(λ_min, 0)| / λ_max`` exceeds a
  threshold (default 0.1), i.e. where the negative curvature hidden from the plane is more
  than a tenth of the positive curvature. 0 for a convex region, 1 where every point is a
  clear saddle. (A positive λ_min is convex: it counts as r = 0.)
- ``level_set_convexity``: for the sublevel sets ``S_q = {grid points with f <= quantile_q(f)}``
  at q = 0.1 … 0.5, the ratio ``|S_q| / |grid points inside the convex hull of S_q|``,
  averaged over q. A function whose sublevel sets are convex (a bowl, any quasiconvex
  function) scores exactly 1; a saddle's sets are the non-convex region between hyperbolas,
  a chaotic surface's are scattered islands, both well below 1. In 1D the hull of ``S_q`` is
  the interval from its first to its last point.
- ``local_minima_count``: interior grid points strictly lower than all 8 neighbours (2 in 1D)
  — 1 for a bowl, 0 for a saddle, one per basin for a rugged surface; at the grid's scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.spatial import Delaunay, QhullError

DEFAULT_RATIO_THRESHOLD = 0.1
DEFAULT_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5)


def curvature_ratio(lambda_min: np.ndarray, lambda_max: np.ndarray) -> np.ndarray:
    """``|min(λ_min, 0)| / λ_max`` per point; NaN where ``λ_max <= 0`` (no positive curvature)."""
    low, high = np.asarray(lambda_min, float), np.asarray(lambda_max, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(np.minimum(low, 0.0)) / high
    return np.where(high > 0, ratio, np.nan)


def curvature_nonconvex_fraction(
    lambda_min: np.ndarray, lambda_max: np.ndarray, threshold: float = DEFAULT_RATIO_THRESHOLD
) -> float:
    """Fraction of curvature-map points with ``|min(λ_min,0)|/λ_max > threshold`` (Li et al.
    2018 §6); points without positive curvature count as non-convex. NaN for an empty map."""
    low, high = np.asarray(lambda_min, float), np.asarray(lambda_max, float)
    finite = np.isfinite(low) & np.isfinite(high)
    if not finite.any():
        return math.nan
    ratio = curvature_ratio(low[finite], high[finite])
    nonconvex = np.where(np.isnan(ratio), True, ratio > threshold)
    return float(np.mean(nonconvex))


def level_set_convexity(
    values: np.ndarray, quantiles: Sequence[float] = DEFAULT_QUANTILES
) -> float:
    """Mean over ``quantiles`` of ``|S_q| / |grid ∩ hull(S_q)|`` (see the module docstring):
    1 when every sublevel set is convex. Works on grid indices, so it needs no coordinates;
    non-finite values count as +inf (never in a sublevel set)."""
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    if finite.size == 0 or v.ndim not in (1, 2):
        return math.nan
    v = np.where(np.isfinite(v), v, np.inf)
    ratios = []
    for q in quantiles:
        inside = v <= np.quantile(finite, q)
        ratios.append(_hull_fill(inside))
    return float(np.mean(ratios))


def _hull_fill(mask: np.ndarray) -> float:
    """``|mask| / |grid points in the convex hull of mask|``."""
    points = np.argwhere(mask)
    if len(points) == 0:
        return math.nan
    if mask.ndim == 1:
        return len(points) / float(points.max() - points.min() + 1)
    try:
        hull = Delaunay(points.astype(np.float64))
    except QhullError:  # fewer than 3 points or all on one line
        return _collinear_fill(points)
    grid = np.argwhere(np.ones(mask.shape, dtype=bool)).astype(np.float64)
    in_hull = int((hull.find_simplex(grid, tol=1e-9) >= 0).sum())
    return len(points) / max(in_hull, len(points))


def _collinear_fill(points: np.ndarray) -> float:
    """Hull of collinear grid points: the segment between the extremes."""
    if len(points) == 1:
        return 1.0
    first, last = points.min(axis=0), points.max(axis=0)
    steps = int(np.gcd.reduce(np.abs(last - first)))  # grid points on the segment − 1
    return len(points) / float(max(steps + 1, len(points)))


def local_minima_count(values: np.ndarray) -> int:
    """Interior points strictly below all their neighbours (8 in 2D, 2 in 1D)."""
    v = np.asarray(values, dtype=np.float64)
    v = np.where(np.isfinite(v), v, np.inf)
    if v.ndim == 1:
        if len(v) < 3:
            return 0
        c = v[1:-1]
        return int(((c < v[:-2]) & (c < v[2:])).sum())
    if v.ndim != 2 or min(v.shape) < 3:
        return 0
    c = v[1:-1, 1:-1]
    lower = np.ones_like(c, dtype=bool)
    ny, nx = v.shape
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                lower &= c < v[1 + dy : ny - 1 + dy, 1 + dx : nx - 1 + dx]
    return int(lower.sum())


def shape_metrics(values: np.ndarray) -> dict[str, float]:
    """The surface-level, scale-free numbers of one loss grid, for reports."""
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v) & (v > 0)]
    span = float(np.log10(finite.max() / finite.min())) if finite.size else math.nan
    return {
        "level_set_convexity": level_set_convexity(v),
        "local_minima": float(local_minima_count(v)),
        "log10_loss_span": span,
    }
