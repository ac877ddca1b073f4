"""When a point stops sampling, how far its next look reads, and which points sample next.

Stopping: a point takes at most ``MAX_LOOKS`` looks with an error — a first stage, then looks
planned from its own standard error so far (the prefix its target asks for, at least
``GROWTH`` times the current one, rounded up to the ladder) — and is read whole (n = N, no
error) if the last of them still misses. Its stated interval is ``estimate ± z·SE`` with
``z`` the simultaneous (Bonferroni) quantile over those looks (``estimator.simultaneous_z``:
2.50 for four), so stopping at the first look whose half-width meets the target — optional
stopping — keeps the stated coverage. The target is checked on the loss of every split;
accuracy is stated with its own interval at the same ``z``.

Refinement: points not at target continue in rounds of one stage each; within a round first
those whose loss interval straddles a contour level (``CONTOUR_LEVELS`` evenly spaced over the
current estimates' range, the figure's own count), then those with a grid neighbour whose
difference is not resolved (``|Δ| < z·√(SE_p² + SE_q²)``), then the rest, each class in the
coarse-to-fine point order.
"""

from __future__ import annotations

import numpy as np

from landscape.explore.permutation import round_up
from landscape.explore.spec import EstimateSpec

CONTOUR_LEVELS = 20
STRADDLES, UNRESOLVED, REST = 0, 1, 2
MAX_LOOKS = 4  # looks with an error: the first stage and three planned ones, then N
GROWTH = 1.25  # a planned look reads at least this many times the prefix so far


def at_target(value: np.ndarray, se: np.ndarray, z: float, spec: EstimateSpec) -> np.ndarray:
    """Whether each interval's half-width ``z·SE`` is within the target (NaN: not yet)."""
    bound = spec.target * np.abs(value) if spec.relative else np.full_like(value, spec.target)
    with np.errstate(invalid="ignore"):
        ok = np.asarray((z * se <= bound) | (se == 0), dtype=bool)
    out: np.ndarray = ok & np.isfinite(se)
    return out


def next_sizes(
    n: np.ndarray,
    looks: np.ndarray,
    value: np.ndarray,
    se: np.ndarray,
    z: float,
    spec: EstimateSpec,
    sizes: np.ndarray,
) -> np.ndarray:
    """Where each point's next look reads to (the split's ``sizes``, its ladder, end at N):
    the first stage; after ``MAX_LOOKS`` looks, N; else the prefix at which the per-sample
    variance seen so far meets the target, ``1 / (t²/(z²s²) + 1/N)``, at least ``GROWTH·n``."""
    size = float(sizes[-1])
    bound = spec.target * np.abs(value) if spec.relative else np.full_like(value, spec.target)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_sample = se * se * n / np.maximum(1.0 - n / size, 1e-12)
        need = 1.0 / (bound * bound / (z * z * per_sample) + 1.0 / size)
    want = np.maximum(GROWTH * n, np.where(np.isfinite(need), need, size))
    out = round_up(want, sizes)
    out = np.where(n == 0, sizes[0], out)
    result: np.ndarray = np.where(looks >= MAX_LOOKS, sizes[-1], out)
    return result


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
