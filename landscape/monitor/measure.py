"""What one monitor call measures, each held to what is left of its time budget.

λmax by the sharpness tracker's warm-started Lanczos (``sharpness.top_eigenpair``) on the
project's ``HessianOperator`` or, when its product cap does not fit the time left,
fixed-step Lanczos with as many steps as do fit (``lanczos_until``, stopped at the deadline
too); the trace by Hutchinson's estimator with fewer probes when they do not all fit; the
1-D curve and 2-D surface on the engine's ``GridEvaluator`` along filter-normalized random
directions (``make_directions``, Li et al. 2018 §4). Costs are predicted from one timed
Hessian-vector product and one timed forward pass over the subset, both taken first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from landscape.analysis.hessian import HessianOperator
from landscape.analysis.sharpness import WARM_NOISE, SharpnessOptions, mean_loss, top_eigenpair
from landscape.specs import DirectionSpec, EngineOptions, LossName

Measurement = Literal["lambda_max", "trace", "curve1d", "surface2d"]
MEASUREMENTS: tuple[Measurement, ...] = ("lambda_max", "trace", "curve1d", "surface2d")
MIN_LANCZOS_STEPS = 2  # one step is only a Rayleigh quotient: fewer is a skip, not a cut


@dataclass
class Budget:
    """Seconds left of one call (None: unlimited) and what was cut to stay within them."""

    seconds: float | None
    clock: Callable[[], float] = time.perf_counter
    cuts: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def left(self) -> float:
        if self.seconds is None:
            return float("inf")
        return self.seconds - self.elapsed()

    def affordable(self, cost_each: float) -> int | float:
        """How many units of ``cost_each`` seconds fit in what is left (inf: no budget)."""
        left = self.left()
        if left == float("inf"):
            return float("inf")
        return max(0, int(left // max(cost_each, 1e-9)))

    def cut(self, what: str, planned: int, done: int, unit: str, reason: str) -> None:
        self.cuts.append(
            {"what": what, "planned": planned, "done": done, "unit": unit, "reason": reason}
        )


@dataclass
class Costs:
    """Seconds of one Hessian-vector product and one forward pass over the subset."""

    product_s: float
    forward_s: float


def probe_costs(operator: HessianOperator) -> tuple[float, Costs]:
    """The mean loss at θ (timed: one forward pass) and one timed product on a seeded probe."""
    start = time.perf_counter()
    loss = mean_loss(operator)
    forward_s = time.perf_counter() - start
    probe = np.random.default_rng(0).standard_normal(operator.n)
    start = time.perf_counter()
    operator.matvec(probe)
    return loss, Costs(product_s=time.perf_counter() - start, forward_s=forward_s)


def lambda_max(
    operator: HessianOperator,
    options: SharpnessOptions,
    warm: np.ndarray | None,
    costs: Costs,
    budget: Budget,
) -> tuple[dict[str, Any] | None, np.ndarray | None]:
    """λmax and how it was found, and the eigenvector to warm-start the next call (None when
    this call found none). ARPACK when its whole cap fits the budget, else Lanczos for as many
    steps as fit, ending early once converged (no cut then) or at the deadline should products
    slow down."""
    # toy models (n <= krylov): the dense Hessian, n products
    cap = operator.n if operator.n <= options.krylov else options.product_cap
    affordable = budget.affordable(costs.product_s)
    before = operator.matvecs
    if affordable >= cap:
        value, vector = top_eigenpair(operator, options, warm)
        found = {"lambda_max": value, "method": "lanczos", "products": operator.matvecs - before}
        return {**found, "residual": None}, vector
    reason = (
        f"{cap} products at {costs.product_s:.3g} s each do not fit the {budget.left():.3g} s left"
    )
    if affordable < MIN_LANCZOS_STEPS:
        budget.cut("lambda_max", cap, 0, "products", reason)
        return None, None
    v0 = np.random.default_rng(options.seed).standard_normal(operator.n)
    if warm is not None and warm.shape == v0.shape:
        v0 = warm + WARM_NOISE * v0 / np.linalg.norm(v0)  # as the tracker's warm start
    top, residual, steps, converged = lanczos_until(
        operator.matvec, v0, int(affordable), budget, tol=options.tol
    )
    if not converged:  # a converged run is as good as the uncut one: nothing was lost
        if steps < min(affordable, operator.n):
            reason += f"; the budget ran out after {steps} (products took longer than predicted)"
        budget.cut("lambda_max", cap, steps, "products", reason)
    # the top Ritz value is a lower bound on λmax, within its residual of an eigenvalue
    return {"lambda_max": top, "method": "lanczos-steps", "products": steps,
            "residual": residual}, None  # fmt: skip


def lanczos_until(
    matvec: Callable[[np.ndarray], np.ndarray],
    v0: np.ndarray,
    max_steps: int,
    budget: Budget,
    tol: float = 0.0,
) -> tuple[float, float, int, bool]:
    """The top Ritz value of at most ``max_steps`` Lanczos steps from ``v0`` (Lanczos 1950,
    with full reorthogonalization as ``spectral_density.lanczos_tridiagonal``), its residual
    norm ``β_m |s_m|`` (Parlett, Thm 4.5.1), the steps taken and whether it converged
    (residual <= ``tol`` · |θ|, the criterion ``hessian.tolerance`` applies; ``tol=0``: never
    early). It also stops when the budget runs out (after at least two steps) or the Krylov
    space is exhausted (then the Ritz value is exact)."""
    n = len(v0)
    basis = np.zeros((min(max_steps, n), n))
    alpha: list[float] = []
    beta: list[float] = []
    v = v0 / np.linalg.norm(v0)
    for j in range(min(max_steps, n)):
        if j >= MIN_LANCZOS_STEPS and budget.left() <= 0:
            break
        basis[j] = v
        w = np.asarray(matvec(v), dtype=np.float64)
        alpha.append(float(w @ v))
        for _ in range(2):  # "twice is enough" (Kahan/Parlett)
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        b = float(np.linalg.norm(w))
        if b <= 1e-10 * max(map(abs, alpha)):  # exhausted: T's eigenvalues are H's
            top, _ = _top_ritz(alpha, beta, 0.0)
            return top, 0.0, len(alpha), True
        beta.append(b)
        v = w / b
        if tol > 0 and len(alpha) >= MIN_LANCZOS_STEPS:
            top, residual = _top_ritz(alpha, beta[:-1], b)
            if residual <= tol * abs(top):
                return top, residual, len(alpha), True
    top, residual = _top_ritz(alpha, beta[: len(alpha) - 1], beta[-1] if beta else 0.0)
    return top, residual, len(alpha), False


def _top_ritz(alpha: list[float], off: list[float], last: float) -> tuple[float, float]:
    """The largest eigenvalue of the tridiagonal ``T`` and its residual ``last · |s_m|``."""
    from scipy.linalg import eigh_tridiagonal

    m = len(alpha)
    values, vectors = eigh_tridiagonal(
        np.asarray(alpha), np.asarray(off[: m - 1]), select="i", select_range=(m - 1, m - 1)
    )
    return float(values[0]), float(last * abs(vectors[-1, 0]))


def trace(
    operator: HessianOperator, samples: int, seed: int, costs: Costs, budget: Budget
) -> dict[str, Any] | None:
    """Hutchinson's ``tr(H)`` (Hutchinson 1989): the mean of ``zᵀHz`` over Rademacher ``z``,
    the same probes as ``hutchinson_trace(operator, samples, seed)``, fewer when they do not
    all fit the budget (predicted, or the deadline reached); its standard error with two or
    more."""
    affordable = int(min(samples, budget.affordable(costs.product_s)))
    reason = (f"{samples} probes at {costs.product_s:.3g} s each do not fit the "
              f"{budget.left():.3g} s left")  # fmt: skip
    rng = np.random.default_rng(seed)
    values: list[float] = []
    for _ in range(affordable):
        if values and budget.left() <= 0:
            reason = f"the budget ran out after {len(values)} (products took longer than predicted)"
            break
        z = rng.integers(0, 2, size=operator.n).astype(np.float64) * 2 - 1
        values.append(float(z @ operator.matvec(z)))
    if len(values) < samples:
        budget.cut("trace", samples, len(values), "probes", reason)
    if not values:
        return None
    done = len(values)
    stderr = float(np.std(values, ddof=1) / np.sqrt(done)) if done > 1 else None
    return {"trace": float(np.mean(values)), "stderr": stderr, "samples": done}


def slice_losses(
    model: nn.Module,
    data: tuple[Tensor, Tensor],
    loss: LossName,
    axes: list[np.ndarray],
    *,
    seed: int,
    device: torch.device,
    what: Measurement,
    costs: Costs,
    budget: Budget,
) -> np.ndarray | None:
    """The mean loss on a 1-D line or 2-D grid around θ (shape: the axes' lengths), along
    filter-normalized random directions drawn from ``seed`` (the same draw every call, scaled
    to the current weights), or None when its forward passes do not fit the budget."""
    from landscape.directions import make_directions
    from landscape.engine.evaluator import GridEvaluator

    shape = tuple(len(a) for a in axes)
    n_points = int(np.prod(shape))
    if budget.affordable(costs.forward_s) < n_points:
        budget.cut(
            what,
            n_points,
            0,
            "points",
            f"{n_points} forward passes at {costs.forward_s:.3g} s each do not fit the "
            f"{budget.left():.3g} s left",
        )
        return None
    drawn, _ = make_directions(model, DirectionSpec(seed=seed), len(axes))
    directions: list[Mapping[str, Tensor]] = list(drawn)
    mesh = np.meshgrid(*axes, indexing="ij")  # row-major: the first axis is x
    coords = np.stack([m.ravel() for m in mesh], axis=1)
    options = EngineOptions(
        device="cuda" if device.type == "cuda" else "cpu",
        devices=(device.index,) if device.type == "cuda" and device.index is not None else None,
        precision="fp32",
        points_per_call=1,
        workers=1,
        compile=False,
    )
    with GridEvaluator(
        model, directions, {"train": data}, loss=loss, options=options, n_points=n_points
    ) as evaluator:
        values = evaluator.evaluate(coords)["train_loss"]
    return np.asarray(values, dtype=np.float64).reshape(shape)
