"""The Hessian's whole eigenvalue density by stochastic Lanczos quadrature (SLQ).

Extreme eigenvalues (``hessian.py``) say how sharp the sharpest direction is; the density says
how the curvature is spread over all ``n`` directions: a bulk near 0, a few outliers, and,
away from a minimum, a negative tail (Ghorbani et al. 2019, "An investigation into neural net
optimization via Hessian eigenvalue density"; PyHessian, Yao et al. 2020). For a unit probe
``v``, ``m`` Lanczos steps give a tridiagonal ``T_m`` with eigenpairs ``(θ_k, u_k)``; then

    vᵀ f(H) v ≈ Σ_k τ_k f(θ_k),   τ_k = (u_k[0])²        (Gauss quadrature, Golub & Meurant)

exactly for polynomials ``f`` of degree ≤ 2m − 1. Averaging over random probes with
``E[v vᵀ] = I/n`` turns that into the spectral measure ``(1/n) Σ_i δ(t − λ_i)``: nodes are the
Ritz values ``θ_k``, weights ``τ_k / n_probes``. The plotted density smooths each node with a
Gaussian of width ``sigma``. The share of negative eigenvalues is not read off the nodes (one
node next to a cluster of zeros carries the cluster's weight and its sign is arbitrary): it is
the mass below ``−ε`` with bounds from a Gauss–Radau rule (``negative_mass``). Lanczos here
keeps every basis vector and reorthogonalizes against all of them (full reorthogonalization),
so no ghost copies of outliers appear.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from landscape.analysis.negative_mass import NegativeMass, epsilon, radau_split, summarize
from landscape.errors import SpecError

Probe = Literal["rademacher", "gaussian"]
MatVec = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SpectralDensity:
    """SLQ nodes and weights per probe, and the smoothed density on ``grid``."""

    nodes: np.ndarray  # (n_probes, m) Ritz values; NaN-padded where Lanczos stopped early
    weights: np.ndarray  # (n_probes, m) squared first components, each row sums to 1
    grid: np.ndarray  # (n_grid,) eigenvalue axis
    density: np.ndarray  # (n_grid,) Gaussian-smoothed density, integrates to ~1
    sigma: float  # the kernel's standard deviation
    n: int  # matrix size (number of parameters)
    seed: int
    probe: Probe
    steps: int
    matvecs: int
    wall_time_s: float
    settings: dict[str, Any] = field(default_factory=dict)
    # per probe, the Gauss–Radau weights below −ε and at −ε (``negative_mass``); empty in
    # files written before they were recorded
    negative: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    epsilon: float | None = None

    @property
    def negative_mass(self) -> NegativeMass | None:
        """The share of eigenvalues below ``−epsilon`` with its bounds and spread over probes
        (``landscape.analysis.negative_mass``); None where not recorded."""
        if self.epsilon is None or len(self.negative) == 0:
            return None
        return summarize(self.negative, self.epsilon)

    def _flat(self) -> tuple[np.ndarray, np.ndarray]:
        keep = np.isfinite(self.nodes)
        return self.nodes[keep], self.weights[keep] / len(self.nodes)

    def cdf(self, t: float) -> float:
        """Gauss-rule fraction of eigenvalues ``<= t`` (from the nodes, not the smoothing).
        Near a cluster of eigenvalues this jumps by the weight of the one node that stands for
        it; ``negative_mass`` says how much lies below 0 and how surely."""
        nodes, weights = self._flat()
        return float(weights[nodes <= t].sum())

    def moment(self, k: int) -> float:
        """Estimated ``tr(H^k) / n``; exact in expectation for ``k <= 2·steps − 1``."""
        nodes, weights = self._flat()
        return float((weights * nodes**k).sum())

    @property
    def top(self) -> float:
        """The largest Ritz value (converges to λ_max first)."""
        return float(np.nanmax(self.nodes))

    @property
    def bottom(self) -> float:
        return float(np.nanmin(self.nodes))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (NaN padding → None)."""
        negative = self.negative_mass
        return {
            **(negative.to_dict() if negative is not None else {}),
            "nodes": [[None if not np.isfinite(v) else float(v) for v in r] for r in self.nodes],
            "weights": [[float(v) for v in row] for row in self.weights],
            "grid": self.grid.tolist(),
            "density": self.density.tolist(),
            "sigma": self.sigma,
            "n": self.n,
            "seed": self.seed,
            "probe": self.probe,
            "steps": self.steps,
            "matvecs": self.matvecs,
            "wall_time_s": self.wall_time_s,
            "mean": self.moment(1),
            "top": self.top,
            "bottom": self.bottom,
            "settings": dict(self.settings),
        }


def lanczos_tridiagonal(
    matvec: MatVec, v0: np.ndarray, steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """``steps`` Lanczos steps from ``v0`` with full reorthogonalization: the diagonal
    ``alpha`` and off-diagonal ``beta`` of ``T`` (shorter when a Krylov space is exhausted)."""
    alpha, beta, _ = _lanczos(matvec, v0, steps)
    return alpha, beta


def _lanczos(matvec: MatVec, v0: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray, float]:
    """``alpha``, ``beta`` of ``T_m`` and ``β_m``, the norm of the last residual (0 when the
    Krylov space is exhausted): ``H V_m = V_m T_m + β_m v_{m+1} e_mᵀ``."""
    n = len(v0)
    basis = np.zeros((min(steps, n), n))
    alpha: list[float] = []
    beta: list[float] = []
    v = v0 / np.linalg.norm(v0)
    for j in range(min(steps, n)):
        basis[j] = v
        w = np.asarray(matvec(v), dtype=np.float64)
        a = float(w @ v)
        alpha.append(a)
        # full reorthogonalization, twice ("twice is enough", Kahan/Parlett)
        for _ in range(2):
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        b = float(np.linalg.norm(w))
        # exhausted: the residual is rounding noise relative to the spectrum's scale so far
        # (relative, so a Hessian whose eigenvalues are all tiny still gets its steps)
        scale = max(abs(a), max(beta, default=0.0), max(map(abs, alpha)))
        if b <= 1e-10 * scale:
            return np.asarray(alpha), np.asarray(beta), 0.0
        if j == min(steps, n) - 1:
            return np.asarray(alpha), np.asarray(beta), b
        beta.append(b)
        v = w / b
    return np.asarray(alpha), np.asarray(beta), 0.0  # steps == 0 never reaches here


@dataclass(frozen=True)
class RitzExtremes:
    """The smallest and largest Ritz values of a Lanczos run, each with its residual norm
    ``‖Hy − θy‖ = β_m |s_{m,i}|``: ``H`` has an eigenvalue within that distance of ``θ``
    (Parlett, *The Symmetric Eigenvalue Problem*, Thm 4.5.1), and by interlacing
    ``λ_min <= low`` and ``high <= λ_max``."""

    low: float
    low_residual: float
    high: float
    high_residual: float
    steps: int  # Lanczos steps taken (fewer than asked when the Krylov space ran out)


def ritz_values(matvec: MatVec, v0: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Every Ritz value of ``steps`` Lanczos steps from ``v0``, ascending, with its residual
    norm ``β_m |s_{m,i}|`` (see ``RitzExtremes``)."""
    if steps < 1:
        raise SpecError(f"Lanczos steps must be >= 1, got {steps}")
    alpha, beta, last = _lanczos(matvec, v0, steps)
    t = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)
    theta, vectors = np.linalg.eigh(t)
    return theta, last * np.abs(vectors[-1])


def ritz_extremes(matvec: MatVec, v0: np.ndarray, steps: int) -> RitzExtremes:
    """Both ends of the spectrum from ``steps`` products: Lanczos finds extreme, well separated
    eigenvalues first, so a few dozen steps pin an outlier (a strong negative direction or the
    top curvature) while an end buried in the bulk stays a bound from the inside."""
    theta, residuals = ritz_values(matvec, v0, steps)
    return RitzExtremes(
        low=float(theta[0]),
        low_residual=float(residuals[0]),
        high=float(theta[-1]),
        high_residual=float(residuals[-1]),
        steps=len(theta),
    )


def gauss_quadrature(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodes (eigenvalues of ``T``) and weights (squared first eigenvector components)."""
    t = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)
    nodes, vectors = np.linalg.eigh(t)
    return nodes, vectors[0] ** 2


def spectral_density(
    matvec: MatVec,
    n: int,
    *,
    n_probes: int = 5,
    steps: int = 80,
    probe: Probe = "rademacher",
    seed: int = 0,
    sigma: float | None = None,
    sigma_fraction: float = 0.01,
    n_grid: int = 400,
) -> SpectralDensity:
    """SLQ density of the symmetric ``n × n`` operator behind ``matvec`` (float64 NumPy in and
    out; ``HessianOperator.matvec`` is one). ``sigma`` defaults to ``sigma_fraction`` of the
    spectrum's estimated width; the grid spans it with 5·sigma margins. Probes are drawn from
    ``numpy.random.default_rng(seed)``, so equal arguments give equal numbers."""
    if n < 1:
        raise SpecError(f"spectral density needs n >= 1, got {n}")
    if n_probes < 1 or steps < 1 or n_grid < 2:
        raise SpecError(
            f"n_probes, steps must be >= 1 and n_grid >= 2, got {n_probes}, {steps}, {n_grid}"
        )
    if probe not in ("rademacher", "gaussian"):
        raise SpecError(f"probe must be 'rademacher' or 'gaussian', got {probe!r}")
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    m = min(steps, n)
    nodes = np.full((n_probes, m), np.nan)
    weights = np.zeros((n_probes, m))
    runs: list[tuple[np.ndarray, np.ndarray, float]] = []
    matvecs = 0

    def counted(v: np.ndarray) -> np.ndarray:
        nonlocal matvecs
        matvecs += 1
        return matvec(v)

    for p in range(n_probes):
        if probe == "rademacher":
            v0 = rng.integers(0, 2, size=n).astype(np.float64) * 2 - 1
        else:
            v0 = rng.standard_normal(n)
        alpha, beta, last = _lanczos(counted, v0, m)
        runs.append((alpha, beta, last))
        theta, tau = gauss_quadrature(alpha, beta)
        nodes[p, : len(theta)], weights[p, : len(theta)] = theta, tau
    eps = epsilon(nodes)
    negative = np.array([radau_split(*run, -eps) for run in runs])
    low, high = float(np.nanmin(nodes)), float(np.nanmax(nodes))
    width = high - low
    if sigma is None:
        sigma = sigma_fraction * width if width > 0 else max(abs(high), 1.0) * sigma_fraction
    if not sigma > 0:
        raise SpecError(f"sigma must be > 0, got {sigma}")
    grid = np.linspace(low - 5 * sigma, high + 5 * sigma, n_grid)
    keep = np.isfinite(nodes)
    flat_nodes, flat_weights = nodes[keep], weights[keep] / n_probes
    kernel = np.exp(-0.5 * ((grid[:, None] - flat_nodes[None, :]) / sigma) ** 2)
    density = kernel @ flat_weights / (sigma * np.sqrt(2 * np.pi))
    return SpectralDensity(
        nodes=nodes,
        weights=weights,
        grid=grid,
        density=density,
        sigma=float(sigma),
        n=n,
        seed=seed,
        probe=probe,
        steps=m,
        matvecs=matvecs,
        wall_time_s=time.perf_counter() - start,
        settings={"n_probes": n_probes, "steps": steps, "n_grid": n_grid},
        negative=negative,
        epsilon=eps,
    )
