"""What one monitor call measures, each held to what is left of its time budget.

Every measurement here is the project's own: λmax by the sharpness tracker's warm-started
Lanczos (``landscape.analysis.sharpness.top_eigenpair``) or, when its product cap does not fit
the time left, fixed-step Lanczos (``ritz_values``) with as many steps as do fit; the trace by
Hutchinson's estimator (``hutchinson_trace``) with fewer probes when they do not all fit; the
1-D curve and 2-D surface on the engine's ``GridEvaluator`` along filter-normalized random
directions (``make_directions``, Li et al. 2018 §4). Costs are predicted from one timed
Hessian-vector product and one timed forward pass over the subset, both taken first.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from landscape.analysis.hessian import HessianOperator, hutchinson_trace
from landscape.analysis.sharpness import SharpnessOptions, mean_loss, top_eigenpair
from landscape.analysis.spectral_density import ritz_values
from landscape.specs import DirectionSpec, EngineOptions, LossName

Measurement = Literal["lambda_max", "trace", "curve1d", "surface2d"]
MEASUREMENTS: tuple[Measurement, ...] = ("lambda_max", "trace", "curve1d", "surface2d")
MIN_LANCZOS_STEPS = 2  # one step is only a Rayleigh quotient: fewer is a skip, not a cut


@dataclass
class Budget:
    """Seconds left of one call (None: unlimited) and what was cut to stay within them."""

    seconds: float | None
    started: float = field(default_factory=time.perf_counter)
    cuts: list[dict[str, Any]] = field(default_factory=list)

    def left(self) -> float:
        if self.seconds is None:
            return float("inf")
        return self.seconds - (time.perf_counter() - self.started)

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
    this call found none). ARPACK when its whole cap fits the budget, else the steps that do."""
    # toy models (n <= krylov): the dense Hessian, n products
    cap = operator.n if operator.n <= options.krylov else options.product_cap
    affordable = budget.affordable(costs.product_s)
    before = operator.matvecs
    if affordable >= cap:
        value, vector = top_eigenpair(operator, options, warm)
        return {
            "lambda_max": value,
            "method": "lanczos",
            "products": operator.matvecs - before,
            "residual": None,
        }, vector
    steps = int(min(affordable, operator.n))
    reason = (
        f"{cap} products at {costs.product_s:.3g} s each do not fit the {budget.left():.3g} s left"
    )
    budget.cut("lambda_max", cap, steps if steps >= MIN_LANCZOS_STEPS else 0, "products", reason)
    if steps < MIN_LANCZOS_STEPS:
        return None, None
    v0 = np.random.default_rng(options.seed).standard_normal(operator.n)
    if warm is not None and warm.shape == v0.shape:
        v0 = warm + 0.1 * v0 / np.linalg.norm(v0)  # as the tracker's warm start
    theta, residuals = ritz_values(operator.matvec, v0, steps)
    # the top Ritz value is a lower bound on λmax, within its residual of an eigenvalue
    return {
        "lambda_max": float(theta[-1]),
        "method": "lanczos-steps",
        "products": operator.matvecs - before,
        "residual": float(residuals[-1]),
    }, None


def trace(
    operator: HessianOperator, samples: int, seed: int, costs: Costs, budget: Budget
) -> dict[str, Any] | None:
    """Hutchinson's ``tr(H)`` with ``samples`` probes, or the probes that fit."""
    done = int(min(samples, budget.affordable(costs.product_s)))
    if done < samples:
        budget.cut(
            "trace",
            samples,
            done,
            "probes",
            f"{samples} probes at {costs.product_s:.3g} s each do not fit the "
            f"{budget.left():.3g} s left",
        )
    if done < 1:
        return None
    value, stderr = hutchinson_trace(operator, done, seed)
    return {"trace": value, "stderr": None if np.isnan(stderr) else stderr, "samples": done}


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
