"""When a point stops sampling, and which points sample next.

Stopping: a point's stated interval is ``estimate ± z·SE`` with ``z`` the simultaneous
(Bonferroni) quantile over every stage it could stop at (``estimator.simultaneous_z``), so
stopping at the first stage whose half-width meets the target — optional stopping — keeps the
stated coverage. The target is checked on the loss of every split; accuracy is stated with
its own interval at the same ``z``.

Refinement: points not at target continue in rounds of one stage each; within a round first
those whose loss interval straddles a contour level (``CONTOUR_LEVELS`` evenly spaced over the
current estimates' range, the figure's own count), then those with a grid neighbour whose
difference is not resolved (``|Δ| < z·√(SE_p² + SE_q²)``), then the rest, each class in the
coarse-to-fine point order.
"""

from __future__ import annotations

import numpy as np

from landscape.explore.spec import EstimateSpec

CONTOUR_LEVELS = 20
STRADDLES, UNRESOLVED, REST = 0, 1, 2


def at_target(value: np.ndarray, se: np.ndarray, z: float, spec: EstimateSpec) -> np.ndarray:
    """Whether each interval's half-width ``z·SE`` is within the target (NaN: not yet)."""
    bound = spec.target * np.abs(value) if spec.relative else np.full_like(value, spec.target)
    with np.errstate(invalid="ignore"):
        ok = np.asarray((z * se <= bound) | (se == 0), dtype=bool)
    out: np.ndarray = ok & np.isfinite(se)
    return out


def contour_levels(values: np.ndarray, n_levels: int = CONTOUR_LEVELS) -> np.ndarray:
    """``n_levels`` levels evenly spaced strictly inside the finite values' range."""
    finite = values[np.isfinite(values)]
    if finite.size == 0 or finite.min() == finite.max():
        return np.zeros(0)
    return np.linspace(finite.min(), finite.max(), n_levels + 2)[1:-1]


def priorities(value: np.ndarray, se: np.ndarray, z: float, shape: tuple[int, ...]) -> np.ndarray:
    """The class (``STRADDLES``, ``UNRESOLVED``, ``REST``) of every point of a grid of
    ``shape``, from the plotted metric's estimates and standard errors (flat, row-major)."""
    half = z * np.nan_to_num(se, nan=np.inf)
    levels = contour_levels(value)
    low, high = value - half, value + half
    straddles = ((low[:, None] <= levels) & (levels <= high[:, None])).any(axis=1)
    grid_value, grid_se = value.reshape(shape), np.nan_to_num(se, nan=np.inf).reshape(shape)
    unresolved = np.zeros(shape, dtype=bool)
    for axis in range(len(shape)):
        a = [slice(None)] * len(shape)
        b = [slice(None)] * len(shape)
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        diff = np.abs(grid_value[tuple(a)] - grid_value[tuple(b)])
        both = np.sqrt(grid_se[tuple(a)] ** 2 + grid_se[tuple(b)] ** 2)
        with np.errstate(invalid="ignore"):
            close = ~(diff >= z * both)
        unresolved[tuple(a)] |= close
        unresolved[tuple(b)] |= close
    out = np.full(value.shape, REST, dtype=np.int64)
    out[unresolved.reshape(-1)] = UNRESOLVED
    out[straddles] = STRADDLES
    return out
