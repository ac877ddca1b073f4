"""Plotting directions along the Hessian's top eigenvectors: the plane of steepest curvature.

Random directions show a typical slice; the top-2 eigenvectors of the Hessian of the mean loss
at θ show the *most* curved one (x = the eigenvector of λ₁, y = that of λ₂), so the width of
the plotted well is set by the two sharpest directions (the slice PyHessian plots, Yao et al.
2020). They come from Lanczos (Lanczos 1950) with full reorthogonalization on
``HessianOperator`` products, one product per step, at most ``max_steps`` steps: each step
reports progress and may be cancelled, and the run stops once the top Ritz pairs' residual
estimates ``β_m |s_{m,i}|`` are within ``tol`` (Parlett, *The Symmetric Eigenvalue Problem*,
Thm 4.5.1), so its cost is bounded where ARPACK's restarts were not. The model is in eval
mode, so the Hessian is that of the plotted loss.

Scale: an eigenvector has unit L2 norm over *all* parameters. ``scale="unit"`` keeps it, so a
coordinate of 1 moves θ by distance 1; ``scale="weight"`` multiplies it by ``‖θ‖`` (the norm of
all parameters), so coordinates are relative to the weights' size, comparable to the ±1 of
filter-normalized random directions. Scaling does not change which direction it is, whereas
filter normalization would (it rescales filters one by one), so it is not offered here.
Sign: an eigenvector's sign is arbitrary; each is flipped so that its entry of largest
magnitude is positive, which makes the directions reproducible.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from landscape.analysis.hessian import (
    DEFAULT_BATCH_SIZE,
    HessianOperator,
    LanczosOptions,
    tolerance,
)
from landscape.errors import CancelledError, SpecError
from landscape.specs import (
    DEFAULT_DIRECTION_STEPS,
    MAX_LANCZOS_STEPS,
    DeviceName,
    LossName,
    ResolvedPrecision,
)

log = logging.getLogger(__name__)

Scale = Literal["unit", "weight"]
Direction = dict[str, Tensor]
OnStep = Callable[[int, int], None]  # (steps done, max_steps)


@dataclass(frozen=True)
class TopEigenpairs:
    """The ``k`` largest eigenpairs of a Lanczos run and what they can be trusted to."""

    values: np.ndarray  # (k,) descending
    vectors: np.ndarray  # (n, k) unit columns, signs fixed
    residuals: np.ndarray  # (k,) ‖Hv − λv‖, each measured by one more product
    steps: int  # Lanczos steps taken (products before the residual check)
    tolerance: float  # the residual each may have: tol × the largest |Ritz value|
    converged: bool  # every residual within ``tolerance``


def top_eigenvectors(
    operator: HessianOperator,
    k: int,
    options: LanczosOptions,
    *,
    max_steps: int = DEFAULT_DIRECTION_STEPS,
    on_step: OnStep | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TopEigenpairs:
    """The ``k`` largest eigenpairs from at most ``max_steps`` Lanczos steps (fewer once they
    converge, or once the Krylov space is all of it), seeded by ``options.seed``. ``on_step``
    hears of each step; ``should_stop()`` turning true raises ``CancelledError`` at once."""
    n = operator.n
    if not 1 <= k < n:
        raise SpecError(f"need 1 <= k < number of parameters ({n}), got k={k}")
    if not k <= max_steps <= MAX_LANCZOS_STEPS:
        raise SpecError(
            f"Hessian directions take {k}..{MAX_LANCZOS_STEPS} Lanczos steps (each keeps a "
            f"basis vector of every parameter), got max_steps={max_steps}"
        )
    limit = min(max_steps, n)
    basis = np.empty((limit, n))  # rows are committed to memory only as they are written
    alpha: list[float] = []
    beta: list[float] = []
    v = np.random.default_rng(options.seed).standard_normal(n)
    v /= np.linalg.norm(v)
    for j in range(limit):
        basis[j] = v
        w = np.asarray(operator.matvec(v), dtype=np.float64)
        alpha.append(float(w @ v))
        for _ in range(2):  # full reorthogonalization, twice ("twice is enough", Kahan/Parlett)
            w -= basis[: j + 1].T @ (basis[: j + 1] @ w)
        b = float(np.linalg.norm(w))
        theta, s = np.linalg.eigh(np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1))
        if on_step is not None:
            on_step(j + 1, max_steps)
        if _finished(theta, s, b, k, options.tol):
            break
        if should_stop is not None and should_stop():
            raise CancelledError(f"Hessian directions stopped after {j + 1} Lanczos steps")
        beta.append(b)
        v = w / b
    steps = len(alpha)
    values = theta[::-1][:k].copy()
    vectors = basis[:steps].T @ s[:, ::-1][:, :k]
    vectors /= np.linalg.norm(vectors, axis=0)
    for i in range(k):
        if vectors[np.argmax(np.abs(vectors[:, i])), i] < 0:
            vectors[:, i] *= -1
    residuals = np.array([np.linalg.norm(operator.matvec(vectors[:, i]) - values[i] * vectors[:, i])
                          for i in range(k)])  # fmt: skip
    allowed = tolerance(options.tol, theta)
    converged = bool(np.all(residuals <= allowed))
    if not converged:
        log.warning("Hessian directions: residuals %s above %.3g after %d Lanczos steps",
                    residuals, allowed, steps)  # fmt: skip
    return TopEigenpairs(values, vectors, residuals, steps, allowed, converged)


def _finished(theta: np.ndarray, s: np.ndarray, b: float, k: int, tol: float) -> bool:
    """The top ``k`` Ritz pairs of ``T_m`` (eigenvalues ``theta``, eigenvectors ``s``) have
    converged, or the Krylov space is exhausted (``β_m`` is rounding noise: ``T_m``'s values
    are eigenvalues of ``H``)."""
    m = len(theta)
    exhausted = b <= 1e-10 * float(np.abs(theta).max())
    if exhausted and m < k:
        raise SpecError(f"the Hessian's Krylov space from the seeded start has only {m} "
                        f"dimensions, fewer than the {k} directions asked for")  # fmt: skip
    if m < k:
        return False
    return exhausted or bool(np.all(b * np.abs(s[-1, -k:]) <= tolerance(tol, theta)))


def hessian_directions(
    model: nn.Module,
    data: tuple[Tensor, Tensor],
    ndim: int = 2,
    *,
    scale: Scale = "unit",
    loss: LossName = "cross_entropy",
    device: DeviceName | str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    options: LanczosOptions | None = None,
    precision: ResolvedPrecision = "fp32",
    max_steps: int = DEFAULT_DIRECTION_STEPS,
    on_step: OnStep | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[list[Direction], dict[str, Any]]:
    """``ndim`` directions (x = top eigenvector, y = second) keyed by ``named_parameters()``
    names, float32 on the CPU like ``make_directions``'s whatever ``device`` the products ran
    on (the model itself is not moved), and their provenance (eigenvalues, residuals, steps,
    whether they converged, device, precision, settings), JSON-ready. ``data`` is the split
    whose mean loss the Hessian is of; ``max_steps``, ``on_step``, ``should_stop`` as in
    ``top_eigenvectors``."""
    if ndim not in (1, 2):
        raise SpecError(f"ndim must be 1 or 2, got {ndim}")
    if scale not in ("unit", "weight"):
        raise SpecError(f"scale must be 'unit' or 'weight', got {scale!r}")
    options = options or LanczosOptions()
    dtypes = {p.dtype for p in model.parameters()}
    dtype = torch.float64 if dtypes == {torch.float64} else torch.float32
    operator = HessianOperator(
        model, data, loss=loss, device=device, dtype=dtype, batch_size=batch_size,
        precision=precision,
    )  # fmt: skip
    found = top_eigenvectors(
        operator, ndim, options, max_steps=max_steps, on_step=on_step, should_stop=should_stop
    )
    factor = 1.0
    if scale == "weight":
        factor = sum(float(p.double().pow(2).sum()) for p in operator.theta.values()) ** 0.5
    directions: list[Direction] = []
    for j in range(ndim):
        flat = torch.from_numpy(found.vectors[:, j] * factor)
        parts = operator.unflatten(flat)
        directions.append({name: t.to(torch.float32).cpu().clone() for name, t in parts.items()})
    info: dict[str, Any] = {
        "kind": "hessian",
        "eigenvalues": [float(v) for v in found.values],
        "residuals": [float(r) for r in found.residuals],
        "tolerance": found.tolerance,
        "converged": found.converged,
        "lanczos_steps": found.steps,
        "max_lanczos_steps": max_steps,
        "scale": scale,
        "scale_factor": factor,
        "loss": loss,
        "device": str(operator.device),
        "precision": operator.precision,
        "n_samples": operator.n_samples,
        "matvecs": operator.matvecs,
        "tol": options.tol,
        "seed": options.seed,
    }
    return directions, info
