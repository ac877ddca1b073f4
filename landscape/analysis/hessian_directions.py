"""Plotting directions along the Hessian's extreme eigenvectors: the planes random ones miss.

Random directions show a typical slice, whose expected curvature is the mean tr(H)/n, so a bowl
on the page can hide strong negative curvature (Böttcher & Wheeler 2022). The eigenvectors
of the Hessian of the mean loss at θ show the extremes instead (``ends``): ``max``, the top
two (x = the eigenvector of λ₁, y = that of λ₂), the *most* curved plane, whose well's width
the two sharpest directions set (the slice PyHessian plots, Yao et al. 2020); ``min``, the
bottom two (x = the most negative), where a saddle shows as one; ``max,min``, x = the top and
y = the bottom one, the whole range of curvature in one plane. They come from Lanczos
(Lanczos 1950) with full reorthogonalization on ``HessianOperator`` products, one product per
step, at most ``max_steps`` steps: each step reports progress and may be cancelled, and the
run stops once the picked Ritz pairs' residual estimates ``β_m |s_{m,i}|`` are within ``tol``
(Parlett, *The Symmetric Eigenvalue Problem*, Thm 4.5.1), so its cost is bounded where ARPACK's
restarts were not. The model is in eval mode, so the Hessian is that of the plotted loss.

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
from collections.abc import Callable, Collection
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
    HessianEnds,
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

    values: np.ndarray  # (k,) in axis order: descending from the top, ascending from the bottom
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
    ends: HessianEnds = "max",
) -> TopEigenpairs:
    """``k`` extreme eigenpairs from at most ``max_steps`` Lanczos steps (fewer once they
    converge, or once the Krylov space is all of it), seeded by ``options.seed``: the largest
    (``ends="max"``), the smallest (``"min"``), or the largest and the smallest (``"max,min"``,
    ``k = 2``). ``on_step`` hears of each step; ``should_stop()`` turning true raises
    ``CancelledError`` at once."""
    n = operator.n
    if not 1 <= k < n:
        raise SpecError(f"need 1 <= k < number of parameters ({n}), got k={k}")
    picks = _picks(ends, k)
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
        if _finished(theta, s, b, picks, options.tol):
            break
        if should_stop is not None and should_stop():
            raise CancelledError(f"Hessian directions stopped after {j + 1} Lanczos steps")
        beta.append(b)
        v = w / b
    steps = len(alpha)
    values = theta[picks].copy()
    vectors = basis[:steps].T @ s[:, picks]
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


def _picks(ends: str, k: int) -> list[int]:
    """Indices into the ascending Ritz values of the eigenpairs ``ends`` asks for, in axis
    order: from the top down, from the bottom up, or the top then the bottom."""
    if ends == "max":
        return [-1 - i for i in range(k)]
    if ends == "min":
        return list(range(k))
    if ends == "max,min":
        if k != 2:
            raise SpecError(f"Hessian ends 'max,min' make two directions, not {k}: ask for a plane")
        return [-1, 0]
    raise SpecError(f"Hessian ends must be 'max', 'min' or 'max,min', got {ends!r}")


def _finished(theta: np.ndarray, s: np.ndarray, b: float, picks: list[int], tol: float) -> bool:
    """The picked Ritz pairs of ``T_m`` (eigenvalues ``theta``, eigenvectors ``s``) have
    converged, or the Krylov space is exhausted (``β_m`` is rounding noise: ``T_m``'s values
    are eigenvalues of ``H``)."""
    m, k = len(theta), len(picks)
    exhausted = b <= 1e-10 * float(np.abs(theta).max())
    if exhausted and m < k:
        raise SpecError(f"the Hessian's Krylov space from the seeded start has only {m} "
                        f"dimensions, fewer than the {k} directions asked for")  # fmt: skip
    if m < k:
        return False
    return exhausted or bool(np.all(b * np.abs(s[-1, picks]) <= tolerance(tol, theta)))


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
    ends: HessianEnds = "max",
    params: Collection[str] | None = None,
) -> tuple[list[Direction], dict[str, Any]]:
    """``ndim`` directions (``ends`` as in ``top_eigenvectors``: by default x = the top
    eigenvector, y = the second) keyed by ``named_parameters()``
    names, float32 on the CPU like ``make_directions``'s whatever ``device`` the products ran
    on (the model itself is not moved), and their provenance (eigenvalues, residuals, steps,
    whether they converged, device, precision, settings), JSON-ready. ``data`` is the split
    whose mean loss the Hessian is of; ``max_steps``, ``on_step``, ``should_stop`` as in
    ``top_eigenvectors``. ``params`` (names; None: all): eigenvectors of the Hessian's block
    of that subset (``HessianOperator``), zero on the other parameters, and ``weight`` scale
    the subset's ``‖θ‖``."""
    if ndim not in (1, 2):
        raise SpecError(f"ndim must be 1 or 2, got {ndim}")
    if scale not in ("unit", "weight"):
        raise SpecError(f"scale must be 'unit' or 'weight', got {scale!r}")
    _picks(ends, ndim)  # a bad choice fails before any product
    options = options or LanczosOptions()
    dtypes = {p.dtype for p in model.parameters()}
    dtype = torch.float64 if dtypes == {torch.float64} else torch.float32
    operator = HessianOperator(
        model, data, loss=loss, device=device, dtype=dtype, batch_size=batch_size,
        precision=precision, params=params,
    )  # fmt: skip
    found = top_eigenvectors(
        operator, ndim, options, max_steps=max_steps, on_step=on_step, should_stop=should_stop,
        ends=ends,
    )  # fmt: skip
    factor = 1.0
    if scale == "weight":
        kept = (p for n, p in operator.theta.items() if n in operator.shapes)
        factor = sum(float(p.double().pow(2).sum()) for p in kept) ** 0.5
    directions: list[Direction] = []
    for j in range(ndim):
        flat = torch.from_numpy(found.vectors[:, j] * factor)
        parts = operator.unflatten(flat)
        directions.append(
            {
                name: parts[name].to(torch.float32).cpu().clone()
                if name in parts
                else torch.zeros(p.shape, dtype=torch.float32)
                for name, p in operator.theta.items()
            }
        )
    info: dict[str, Any] = {
        "kind": "hessian",
        "ends": ends,
        "eigenvalues": [float(v) for v in found.values],  # of the x (then y) direction
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
