"""Plotting directions along the Hessian's top eigenvectors: the plane of steepest curvature.

Random directions show a typical slice; the top-2 eigenvectors of the Hessian of the mean loss
at θ show the *most* curved one (x = the eigenvector of λ₁, y = that of λ₂), so the width of
the plotted well is set by the two sharpest directions (the slice PyHessian plots, Yao et al.
2020). They come from Lanczos (ARPACK ``eigsh``) on ``HessianOperator`` products; the model is
in eval mode, so the Hessian is that of the plotted loss.

Scale: an eigenvector has unit L2 norm over *all* parameters. ``scale="unit"`` keeps it, so a
coordinate of 1 moves θ by distance 1; ``scale="weight"`` multiplies it by ``‖θ‖`` (the norm of
all parameters), so coordinates are relative to the weights' size, comparable to the ±1 of
filter-normalized random directions. Scaling does not change which direction it is, whereas
filter normalization would (it rescales filters one by one), so it is not offered here.
Sign: an eigenvector's sign is arbitrary; each is flipped so that its entry of largest
magnitude is positive, which makes the directions reproducible.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, eigsh
from torch import Tensor, nn

from landscape.analysis.hessian import DEFAULT_BATCH_SIZE, HessianOperator, LanczosOptions
from landscape.errors import SpecError
from landscape.specs import DeviceName, LossName, ResolvedPrecision

Scale = Literal["unit", "weight"]
Direction = dict[str, Tensor]


def top_eigenvectors(
    operator: HessianOperator, k: int, options: LanczosOptions
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest eigenvalues (descending) and their unit eigenvectors as columns
    ``(n, k)``, signs fixed (largest-magnitude entry positive). Tiny models (``n < 2k + 2``,
    too small for ARPACK) are diagonalized densely."""
    n = operator.n
    if not 1 <= k < n:
        raise SpecError(f"need 1 <= k < number of parameters ({n}), got k={k}")
    if n < 2 * k + 2:
        values, vectors = np.linalg.eigh(operator.dense())
        values, vectors = values[-k:], vectors[:, -k:]
    else:
        v0 = np.random.default_rng(options.seed).standard_normal(n)
        try:
            values, vectors = eigsh(
                operator.as_linear_operator(),
                k=k,
                which="LA",
                tol=options.tol,
                maxiter=options.maxiter,
                v0=v0,
            )
        except ArpackNoConvergence as exc:
            raise SpecError(
                f"Lanczos found {len(exc.eigenvalues)} of {k} eigenvectors within "
                f"maxiter={options.maxiter}, tol={options.tol}; raise maxiter or tol"
            ) from exc
    order = np.argsort(values)[::-1]
    values, vectors = np.asarray(values)[order], np.asarray(vectors)[:, order]
    for j in range(k):
        if vectors[np.argmax(np.abs(vectors[:, j])), j] < 0:
            vectors[:, j] *= -1
    return values, vectors


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
) -> tuple[list[Direction], dict[str, Any]]:
    """``ndim`` directions (x = top eigenvector, y = second) keyed by ``named_parameters()``
    names, float32 on the CPU like ``make_directions``'s whatever ``device`` the products ran
    on (the model itself is not moved), and their provenance (eigenvalues, device, precision,
    settings), JSON-ready. ``data`` is the split whose mean loss the Hessian is of."""
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
    values, vectors = top_eigenvectors(operator, ndim, options)
    factor = 1.0
    if scale == "weight":
        factor = sum(float(p.double().pow(2).sum()) for p in operator.theta.values()) ** 0.5
    directions: list[Direction] = []
    for j in range(ndim):
        flat = torch.from_numpy(vectors[:, j] * factor)
        parts = operator.unflatten(flat)
        directions.append({name: t.to(torch.float32).cpu().clone() for name, t in parts.items()})
    info: dict[str, Any] = {
        "kind": "hessian",
        "eigenvalues": [float(v) for v in values],
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
