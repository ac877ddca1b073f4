"""Curvature maps: ``|λ_min / λ_max|`` of the full Hessian across a surface's plane.

Li et al. 2018 §6 ("Are we really seeing convexity?") compute, at points ``θ + xδ + yη`` of a
plotted surface, the most negative and most positive Hessian eigenvalues and map the ratio
``|λ_min / λ_max|``: near 0 where the loss is convex in every direction (or nearly so), large
where a projected bowl hides strong negative curvature in directions the plot cannot show.
Each point costs a Lanczos run, so the map is taken on a coarse sub-grid of the surface's own
coordinates (``n × n`` points, at most ``MAX_CURVATURE_GRID`` per axis), aligned with its cells.

Two ways to run Lanczos at a point: ARPACK to a relative tolerance (``steps=None``), or a fixed
number of steps with full reorthogonalization (``steps=k``), which costs exactly ``k`` products
per point. Either way each point records both ends' residual norms and whether they are within
``tol`` of the point's spectral scale (``converged``): a map point that did not converge says
so. The fixed budget matters for trained deep nets:
there ``λ_min`` sits next to the large cluster of near-zero eigenvalues and ARPACK needs hundreds
of restarts to separate it, while the number the map exists for, a *large* ``|λ_min/λ_max|``,
comes from a negative outlier that Lanczos finds in a few dozen steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from landscape.analysis.hessian import (
    DEFAULT_BATCH_SIZE,
    HessianOperator,
    LanczosOptions,
    lanczos_ritz,
)
from landscape.analysis.spectral_density import ritz_extremes
from landscape.errors import SpecError
from landscape.specs import MAX_CURVATURE_GRID, DeviceName, LossName


@dataclass(frozen=True)
class CurvatureMap:
    """Extreme eigenvalues on a sub-grid; arrays ``(ny', nx')`` (``[j, i]`` at
    ``(x[i], y[j])``, as the surface's) or ``(nx',)`` for a 1D surface."""

    x: np.ndarray  # (nx',)
    y: np.ndarray | None  # (ny',); None in 1D
    lambda_max: np.ndarray
    lambda_min: np.ndarray
    matvecs: int
    wall_time_s: float
    # each end's residual norm ‖Hv − θv‖ (an eigenvalue of H lies within it); steps: the
    # fixed Lanczos steps per point, None for ARPACK
    residual_max: np.ndarray
    residual_min: np.ndarray
    tol: float  # relative: see ``tolerance``
    steps: int | None = None

    @property
    def tolerance(self) -> np.ndarray:
        """Per point, the residual each end may have: ``tol · max(|λ_min|, |λ_max|)``."""
        scale: np.ndarray = np.maximum(np.abs(self.lambda_min), np.abs(self.lambda_max))
        return self.tol * scale

    @property
    def converged(self) -> np.ndarray:
        """Per point: both ends' residuals within ``tolerance``."""
        limit = self.tolerance
        return (self.residual_max <= limit) & (self.residual_min <= limit)

    @property
    def ratio(self) -> np.ndarray:
        """``|λ_min / λ_max|`` (Li et al. 2018 §6); NaN where ``λ_max == 0``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.abs(self.lambda_min / self.lambda_max)
        return np.where(self.lambda_max == 0, np.nan, ratio)


def coarse_indices(n_full: int, n: int) -> np.ndarray:
    """``n`` (or fewer) evenly spread indices into an axis of ``n_full`` points, ends included,
    so the coarse points are grid points of the surface and both ends of its range."""
    if n < 1:
        raise SpecError(f"curvature grid must be >= 1 point per axis, got {n}")
    if n == 1:
        return np.array([n_full // 2])
    return np.unique(np.round(np.linspace(0, n_full - 1, min(n, n_full))).astype(np.int64))


def curvature_map(
    model: nn.Module,
    data: tuple[Tensor, Tensor],
    directions: Sequence[Mapping[str, Tensor]],
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    n: int = 5,
    loss: LossName = "cross_entropy",
    device: DeviceName | str = "auto",
    dtype: torch.dtype = torch.float32,
    batch_size: int = DEFAULT_BATCH_SIZE,
    options: LanczosOptions | None = None,
    steps: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    params: Collection[str] | None = None,
) -> CurvatureMap:
    """``λ_min`` and ``λ_max`` at an ``n × n`` sub-grid of the surface coordinates ``x``, ``y``
    (``n`` points in 1D) along ``directions`` (δ, then η), one Lanczos run per point with one
    Ritz value from each end of the spectrum: ARPACK's ``eigsh(which="BE")`` to
    ``options.tol`` (within its product cap, ``arpack_cap(2)``), or, with ``steps``, that many
    steps from the same seeded start vector. ``should_stop`` is asked before every product.
    ``params`` (names; None: all): the Hessian's block of that subset (``HessianOperator``)."""
    if not 1 <= n <= MAX_CURVATURE_GRID:
        raise SpecError(f"curvature grid must be 1..{MAX_CURVATURE_GRID} per axis, got {n}")
    if steps is not None and steps < 2:
        raise SpecError(f"curvature Lanczos steps must be >= 2, got {steps}")
    ndim = 1 if y is None else 2
    if len(directions) != ndim:
        raise SpecError(f"a {ndim}D curvature map needs {ndim} directions, got {len(directions)}")
    options = options or LanczosOptions()
    start = time.perf_counter()
    operator = HessianOperator(
        model, data, loss=loss, device=device, dtype=dtype, batch_size=batch_size,
        should_stop=should_stop, params=params,
    )  # fmt: skip
    xs = np.asarray(x, dtype=np.float64)[coarse_indices(len(x), n)]
    ys = None if y is None else np.asarray(y, dtype=np.float64)[coarse_indices(len(y), n)]
    shape = (len(xs),) if ys is None else (len(ys), len(xs))
    lambda_max, lambda_min = np.empty(shape), np.empty(shape)
    residual_max, residual_min = np.full(shape, np.nan), np.full(shape, np.nan)
    v0 = np.random.default_rng(options.seed).standard_normal(operator.n)
    total = int(np.prod(shape))
    for flat in range(total):
        index = np.unravel_index(flat, shape)  # row-major: x fastest, as the surface's
        coords = [xs[index[-1]]] if ys is None else [xs[index[1]], ys[index[0]]]
        operator.set_point(coords, directions)
        if steps is None:
            (low, high), (low_res, high_res) = lanczos_ritz(operator, 2, "BE", options)
        else:
            ends = ritz_extremes(operator.matvec, v0, steps)
            low, high, low_res, high_res = (
                ends.low, ends.high, ends.low_residual, ends.high_residual
            )  # fmt: skip
        lambda_min[index], lambda_max[index] = low, high
        residual_min[index], residual_max[index] = low_res, high_res
        if on_progress is not None:
            on_progress(flat + 1, total)
    return CurvatureMap(
        x=xs,
        y=ys,
        lambda_max=lambda_max,
        lambda_min=lambda_min,
        matvecs=operator.matvecs,
        wall_time_s=time.perf_counter() - start,
        residual_max=residual_max,
        residual_min=residual_min,
        tol=options.tol,
        steps=steps,
    )
