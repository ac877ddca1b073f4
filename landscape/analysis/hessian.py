"""The Hessian of the mean loss at θ, never formed: products, extreme eigenvalues, trace.

A surface shows the loss in a 2-D slice; the Hessian says how curved it is in *every* direction.
Networks have 10^4-10^7 parameters, so ``H`` (n × n) is never built: everything here is made of
Hessian-vector products ``H·v`` by double backward (Pearlmutter 1994, "Fast exact multiplication
by the Hessian"), each costing about two gradient evaluations.

- ``H`` is the Hessian of the *mean* loss over a whole data split (not a mini-batch estimate):
  products are accumulated batch by batch as sums in float64 and divided by ``N`` once, so the
  batch size changes nothing beyond rounding.
- The model is in eval mode: BN uses its running statistics, so the loss is a fixed function of
  the parameters (the same function the surface plots); buffers are never differentiated.
- Extreme eigenvalues: Lanczos (Lanczos 1950), as implemented by ARPACK's implicitly restarted
  variant (Lehoucq & Sorensen 1996) behind ``scipy.sparse.linalg.eigsh``; vectors are float64
  on the CPU side, the start vector is seeded, so runs are reproducible.
- Every ARPACK run is capped: at most ``maxiter`` restarts (``ARPACK_RESTARTS`` unless told)
  of a ``krylov(k)`` basis, and at most ``arpack_cap(k, …)`` products, which the operator
  enforces; the service's cost estimate counts the same cap, so a run never spends more than
  it was priced at. A run that does not converge within it fails saying so.
- Fixed-step Lanczos (``steps=k``): one run of exactly ``k`` products from the seeded start
  vector gives both ends at once.
- ``should_stop`` is asked before every product: a cancelled analysis stops within one
  product (``CancelledError``), not after its Lanczos run.
- Every eigenvalue carries its residual norm ``‖Hv − θv‖`` (an eigenvalue of ``H`` lies within
  it) and counts as converged when that is at most ``tol`` times the largest ``|θ|`` computed
  (``tolerance``): a result says whether it can be trusted, whichever way it was computed.
- Trace: Hutchinson's estimator (Hutchinson 1989): ``E[zᵀHz] = tr(H)`` for Rademacher ``z``.

Large positive eigenvalues mean sharp minima (Keskar et al. 2017); negative ones mean the point
is a saddle, not a minimum (Li et al. 2018 §6; Ghorbani et al. 2019 for spectra of real nets).
"""

from __future__ import annotations

import copy
import itertools
import logging
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from torch import Tensor, nn
from torch.func import functional_call

from landscape.analysis.spectral_density import ritz_values
from landscape.engine.devices import resolve_device
from landscape.engine.forward import per_sample_loss
from landscape.engine.precision import compute_in, resolve
from landscape.errors import CancelledError, SpecError
from landscape.specs import DeviceName, LossName, ResolvedPrecision, check_choice

log = logging.getLogger(__name__)

Which = Literal["LA", "SA", "BE"]  # eigsh: largest / smallest algebraic, both ends
DEFAULT_BATCH_SIZE = 256
ARPACK_RESTARTS = 10  # restarts of one ARPACK run unless ``maxiter`` says otherwise


def krylov(k: int) -> int:
    """The Krylov basis ARPACK keeps for ``k`` eigenvalues (its ``ncv``, scipy's default)."""
    return max(2 * k + 1, 20)


def arpack_cap(
    k: int, restarts: int | None = None, *, ncv: int | None = None, residuals: bool = True
) -> int:
    """The most Hessian-vector products one ARPACK run for ``k`` eigenvalues may make: its
    first basis of ``ncv`` vectors, at most a basis more per restart (it extends the kept
    vectors by ``ncv − k`` or so), and (with ``residuals``) one product per eigenvector to
    measure its residual. 0 for ``k = 0``."""
    if k < 1:
        return 0
    basis = ncv or krylov(k)
    return basis * (1 + (restarts or ARPACK_RESTARTS)) + (k if residuals else 0)


class ProductCapError(SpecError):
    """A Lanczos run reached its product cap (``HessianOperator.capped``) unconverged."""


@dataclass(frozen=True)
class LanczosOptions:
    """How hard Lanczos tries. ``tol`` is ARPACK's relative accuracy of each Ritz value;
    products computed in float32 carry ~1e-6 relative noise, so asking for much less than
    ``1e-5`` there only costs iterations. ``maxiter`` counts restarts (None:
    ``ARPACK_RESTARTS``), which bounds the products (``arpack_cap``). ``seed`` fixes the start
    vector and the Hutchinson probes."""

    tol: float = 1e-5
    maxiter: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.tol >= 0:
            raise SpecError(f"Lanczos tol must be >= 0, got {self.tol!r}")
        if self.maxiter is not None and self.maxiter < 1:
            raise SpecError(f"Lanczos maxiter must be >= 1, got {self.maxiter!r}")


class HessianOperator:
    """``v ↦ H v`` for the mean loss over ``data`` at a point ``θ + Σ c_k d_k`` (default θ).

    Vectors are flat over ``named_parameters()`` in order; ``matvec`` takes and returns float64
    NumPy arrays (the Lanczos side), the products run on ``device`` in ``dtype``, in strict
    ``fp32`` unless ``precision`` is ``tf32`` (the engine's policy, ``compute_in``: TF32 is
    off for the products and PyTorch's switches are as before after each). The caller's model
    is left as it is: a copy moves where it must. ``should_stop`` is asked before each
    product; ``capped`` bounds the products of one run.

    ``params`` (names; None: all) restricts ``H`` to the block of a parameter subset: vectors
    are flat over those parameters alone (``n`` is their size), the others are held fixed. That
    is ``P H Pᵀ`` for the projection ``P`` onto the subset -- the product of a vector that is
    zero outside it, read back on it -- without the zero eigenvalues of the complement.
    """

    def __init__(
        self,
        model: nn.Module,
        data: tuple[Tensor, Tensor],
        *,
        loss: LossName = "cross_entropy",
        device: DeviceName | str = "auto",
        dtype: torch.dtype = torch.float32,
        batch_size: int = DEFAULT_BATCH_SIZE,
        precision: ResolvedPrecision = "fp32",
        should_stop: Callable[[], bool] | None = None,
        params: Collection[str] | None = None,
    ) -> None:
        check_choice("loss", loss, LossName)
        if batch_size < 1:
            raise SpecError(f"batch_size must be >= 1, got {batch_size}")
        if precision not in ("fp32", "tf32"):
            # Lanczos needs products accurate to ~1e-6 (``LanczosOptions``); bf16 is 1e-2
            raise SpecError(f"Hessian products are computed in fp32 or tf32, got {precision!r}")
        x, y = data
        if len(x) == 0 or len(x) != len(y):
            raise SpecError(f"Hessian needs a non-empty data split, got {len(x)} inputs")
        known = device in ("auto", "cpu", "cuda")
        self.device = resolve_device(device) if known else torch.device(device)
        self.precision = resolve(precision, self.device)  # refuses tf32 off CUDA
        self.dtype = dtype
        self.loss: LossName = loss
        self.model = _on(model, self.device, dtype)
        self.theta = {k: p.detach().clone() for k, p in self.model.named_parameters()}
        self.buffers = {k: b.detach() for k, b in self.model.named_buffers()}
        unknown = sorted(set(params or ()) - set(self.theta))
        if unknown:
            raise SpecError(f"the Hessian's subset names no parameter of the model: {unknown[:5]}")
        if params is not None and not params:
            raise SpecError("the Hessian's parameter subset is empty")
        # the differentiated parameters, in ``named_parameters()`` order
        self.shapes = {k: p.shape for k, p in self.theta.items() if params is None or k in params}
        self.n = sum(int(np.prod(shape, dtype=np.int64)) for shape in self.shapes.values())
        xs, ys = x.to(self.device), y.to(self.device)
        self.x_dtype = dtype if xs.is_floating_point() else xs.dtype
        self.batches = [
            (xs[i : i + batch_size].to(self.x_dtype), ys[i : i + batch_size])
            for i in range(0, len(xs), batch_size)
        ]
        self.n_samples = len(xs)
        self.matvecs = 0
        self.should_stop = should_stop
        self._limit: int | None = None  # the product count ``capped`` allows up to
        self.point = dict(self.theta)
        self._check_fits()

    @contextmanager
    def capped(self, products: int) -> Iterator[None]:
        """At most ``products`` more products inside the block: the next one raises
        ``ProductCapError``, so a Lanczos run costs no more than its estimate counted."""
        outer, self._limit = self._limit, self.matvecs + products
        if outer is not None:
            self._limit = min(self._limit, outer)
        try:
            yield
        finally:
            self._limit = outer

    def _check_fits(self) -> None:
        """One forward pass first, so a model/data mismatch is a clear error, not a trace."""
        xb, yb = self.batches[0]
        try:
            with torch.no_grad(), compute_in(self.precision, self.device):
                logits = self._logits(self.point, xb[:1])
        except RuntimeError as exc:
            raise SpecError(
                f"the model does not accept inputs of shape {tuple(xb.shape[1:])}: "
                f"{str(exc).splitlines()[0]}"
            ) from exc
        n_classes = int(yb.max()) + 1
        if logits.dim() != 2 or logits.shape[1] < n_classes:
            raise SpecError(
                f"the model outputs {tuple(logits.shape[1:])} per sample but the data "
                f"has {n_classes} classes"
            )

    def set_point(
        self, coords: Sequence[float] = (), directions: Sequence[Mapping[str, Tensor]] = ()
    ) -> None:
        """Move to ``θ + Σ c_k d_k`` (Li et al. 2018 §3 plots the loss at these points)."""
        point = dict(self.theta)
        for c, direction in zip(coords, directions, strict=True):
            for name in point:
                step = direction[name].to(self.device, self.dtype)
                point[name] = point[name] + float(c) * step
        self.point = point

    def _logits(self, params: Mapping[str, Tensor], xb: Tensor) -> Tensor:
        out: Tensor = functional_call(self.model, {**params, **self.buffers}, (xb,))
        return out

    def hvp(self, vector: Tensor) -> Tensor:
        """``H v`` as a flat float64 tensor on ``device`` (Pearlmutter 1994, double backward)."""
        if self.should_stop is not None and self.should_stop():
            raise CancelledError(f"Hessian analysis stopped after {self.matvecs} products")
        if self._limit is not None and self.matvecs >= self._limit:
            raise ProductCapError(f"Lanczos reached its cap of Hessian products ({self.matvecs})")
        vs = self.unflatten(vector.to(self.device, self.dtype))
        params = {k: p.detach().requires_grad_(k in self.shapes) for k, p in self.point.items()}
        leaves = [params[k] for k in self.shapes]
        total = torch.zeros(self.n, dtype=torch.float64, device=self.device)
        with compute_in(self.precision, self.device):
            self._accumulate(params, leaves, vs, total)
        self.matvecs += 1
        return total / self.n_samples

    def _accumulate(
        self, params: dict[str, Tensor], leaves: list[Tensor], vs: dict[str, Tensor], total: Tensor
    ) -> None:
        """Add each batch's ``H_batch v`` (the Hessian of its loss *sum*) into ``total``."""
        for xb, yb in self.batches:
            loss_sum = per_sample_loss(self._logits(params, xb), yb, self.loss).sum()
            grads = torch.autograd.grad(loss_sum, leaves, create_graph=True, allow_unused=True)
            dot = sum(
                (
                    (g * vs[k]).sum()
                    for g, k in zip(grads, self.shapes, strict=True)
                    if g is not None
                ),
                torch.zeros((), device=self.device, dtype=self.dtype),
            )
            if not dot.requires_grad:  # loss linear in every parameter used: H = 0
                continue
            hv = torch.autograd.grad(dot, leaves, allow_unused=True)
            total += self.flatten(hv).double()  # exact sum over batches, in float64

    def matvec(self, v: np.ndarray) -> np.ndarray:
        """The float64 NumPy face of ``hvp`` that ``LinearOperator`` calls."""
        flat = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(-1))
        return self.hvp(flat).cpu().numpy()

    def as_linear_operator(self) -> LinearOperator:
        return LinearOperator((self.n, self.n), matvec=self.matvec, dtype=np.float64)

    def flatten(self, tensors: Sequence[Tensor | None]) -> Tensor:
        """Concatenate per-parameter tensors (None = zeros: a parameter the loss ignores)."""
        parts = [
            torch.zeros(shape, device=self.device) if t is None else t
            for t, shape in zip(tensors, self.shapes.values(), strict=True)
        ]
        return torch.cat([p.reshape(-1).to(torch.float64) for p in parts])

    def unflatten(self, vector: Tensor) -> dict[str, Tensor]:
        out, offset = {}, 0
        for name, shape in self.shapes.items():
            size = int(np.prod(shape, dtype=np.int64))
            out[name] = vector[offset : offset + size].reshape(shape)
            offset += size
        assert offset == self.n, "flat vector does not match the parameters"
        return out

    def dense(self) -> np.ndarray:
        """``H`` column by column (n products): only for tiny models and tests."""
        eye = np.eye(self.n)
        h = np.stack([self.matvec(eye[i]) for i in range(self.n)], axis=1)
        symmetric: np.ndarray = (h + h.T) / 2  # equal up to rounding; eigvalsh reads one half
        return symmetric


def _on(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """``model`` in eval mode on ``device`` with floating-point tensors in ``dtype``: the model
    itself when it already is, else a copy — the caller's model is never moved, cast or
    switched out of training mode. Eval mode fixes BN's running statistics, so ``H`` is that
    of the plotted loss function."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    fits = all(t.device == device and (t.dtype == dtype or not t.is_floating_point())
               for t in tensors)  # fmt: skip
    if fits and not model.training:
        return model
    return copy.deepcopy(model).to(device, dtype).eval()


def tolerance(tol: float, values: np.ndarray) -> float:
    """The residual norm an eigenvalue may have and count as converged: ``tol`` times the
    spectrum's scale, the largest ``|θ|`` computed. Relative to the scale, not to each value,
    because a ``λ_min`` next to the bulk of near-zero eigenvalues could never meet ``tol·|θ|``
    while its distance to the true eigenvalue is already negligible beside ``λ_max``."""
    finite = np.abs(np.asarray(values, dtype=np.float64))
    finite = finite[np.isfinite(finite)]
    return float(tol * finite.max()) if finite.size else 0.0


def lanczos_ritz(
    operator: HessianOperator, k: int, which: Which, options: LanczosOptions
) -> tuple[np.ndarray, np.ndarray]:
    """``k`` eigenvalues (ascending) and their residual norms ``‖Hv − θv‖``: ARPACK to
    ``options.tol``, then ``k`` more products to measure each residual.

    ARPACK needs ``k < n`` and a Krylov space wider than ``k``; below that (toy models) the
    Hessian is small enough to build from ``n`` products and diagonalize exactly.
    """
    if k < 1:
        return np.zeros(0), np.zeros(0)
    n = operator.n
    if n < 2 * k + 2:
        values = np.linalg.eigvalsh(operator.dense())
        if which == "LA":
            chosen = values[-k:]
        elif which == "SA":
            chosen = values[:k]
        else:
            chosen = np.concatenate([values[: k // 2], values[len(values) - (k - k // 2) :]])
        return chosen, np.zeros(len(chosen))  # exact up to rounding
    v0 = np.random.default_rng(options.seed).standard_normal(n)
    ncv = min(n, krylov(k))
    restarts = options.maxiter or ARPACK_RESTARTS
    cap = arpack_cap(k, restarts, ncv=ncv)
    try:
        with operator.capped(cap):
            values, vectors = eigsh(
                operator.as_linear_operator(),
                k=k,
                which=which,
                tol=options.tol,
                maxiter=restarts,
                ncv=ncv,
                v0=v0,
            )
            order = np.argsort(values)
            values, vectors = np.asarray(values, dtype=np.float64)[order], vectors[:, order]
            residuals = np.array(
                [np.linalg.norm(operator.matvec(vectors[:, i]) - values[i] * vectors[:, i])
                 for i in range(k)]
            )  # fmt: skip
    except (ArpackNoConvergence, ProductCapError) as exc:
        end = {"LA": "largest", "SA": "smallest", "BE": "extreme"}[which]
        raise SpecError(
            f"Lanczos did not converge to the {k} {end} eigenvalue(s) within {restarts} "
            f"restarts ({cap} Hessian products, the cap its cost estimate counts) at "
            f"tol={options.tol}: ask for fewer, raise maxiter (restarts) or tol, or use "
            "fixed Lanczos steps"
        ) from exc
    return values, residuals


def hutchinson_trace(operator: HessianOperator, samples: int, seed: int) -> tuple[float, float]:
    """``tr(H)`` ≈ mean of ``zᵀHz`` over Rademacher ``z`` (Hutchinson 1989), with its standard
    error (the spread of the probes / √samples); Rademacher probes have the least variance
    among i.i.d. probes, ``2 Σ_{i≠j} H_ij²``."""
    if samples < 1:
        raise SpecError(f"Hutchinson trace needs >= 1 sample, got {samples}")
    rng = np.random.default_rng(seed)
    values = np.empty(samples)
    for s in range(samples):
        z = rng.integers(0, 2, size=operator.n).astype(np.float64) * 2 - 1
        values[s] = z @ operator.matvec(z)
    stderr = float(values.std(ddof=1) / np.sqrt(samples)) if samples > 1 else float("nan")
    return float(values.mean()), stderr


@dataclass(frozen=True)
class HessianResult:
    """Extreme eigenvalues and trace of the Hessian of the mean loss at θ."""

    top: np.ndarray  # (k_top,) largest eigenvalues, descending
    bottom: np.ndarray  # (k_bottom,) smallest eigenvalues, ascending
    trace: float | None  # Hutchinson estimate; None when not asked for
    trace_stderr: float | None
    n_params: int
    n_samples: int
    matvecs: int  # Hessian-vector products spent
    wall_time_s: float
    settings: dict[str, Any] = field(default_factory=dict)
    top_residuals: np.ndarray = field(default_factory=lambda: np.zeros(0))  # ‖Hv − θv‖ each
    bottom_residuals: np.ndarray = field(default_factory=lambda: np.zeros(0))
    tolerance: float = 0.0  # the residual each may have to count as converged (``tolerance``)

    @property
    def converged(self) -> bool:
        """Every computed eigenvalue's residual is within ``tolerance``."""
        residuals = np.concatenate([self.top_residuals, self.bottom_residuals])
        return bool(np.all(residuals <= self.tolerance))

    @property
    def eigenvalues(self) -> np.ndarray:
        """All computed eigenvalues, descending (top ones first, then the bottom ones)."""
        return np.unique(np.concatenate([self.top, self.bottom]))[::-1].copy()

    @property
    def ratio(self) -> float:
        """``|λ_min / λ_max|`` (Li et al. 2018 §6): near 0 is locally convex, large is a saddle;
        NaN unless both ends were computed."""
        if len(self.top) == 0 or len(self.bottom) == 0 or self.top[0] == 0:
            return float("nan")
        return float(abs(self.bottom[0] / self.top[0]))


def hessian_spectrum(
    model: nn.Module,
    data: tuple[Tensor, Tensor],
    *,
    top: int = 3,
    bottom: int = 0,
    trace_samples: int = 0,
    loss: LossName = "cross_entropy",
    device: DeviceName | str = "auto",
    dtype: torch.dtype = torch.float32,
    batch_size: int = DEFAULT_BATCH_SIZE,
    options: LanczosOptions | None = None,
    precision: ResolvedPrecision = "fp32",
    steps: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    params: Collection[str] | None = None,
) -> HessianResult:
    """The ``top`` largest and ``bottom`` smallest Hessian eigenvalues (Lanczos) and, with
    ``trace_samples > 0``, the Hutchinson trace, of the mean ``loss`` over ``data`` at the
    model's parameters, in eval mode on ``device``/``dtype`` (a copy of the model where it
    must move); products in strict ``fp32`` unless ``precision`` is ``tf32``. ``steps``: one
    fixed-step Lanczos run for both ends instead of ARPACK (see the module docstring);
    ``should_stop`` is asked before every product. ``params`` (names; None: all): the Hessian's
    block of that parameter subset (``HessianOperator``), the others held fixed."""
    options = options or LanczosOptions()
    if top < 0 or bottom < 0 or trace_samples < 0:
        raise SpecError(f"top, bottom, trace_samples must be >= 0, got {top}, {bottom}, "
                        f"{trace_samples}")  # fmt: skip
    start = time.perf_counter()
    operator = HessianOperator(
        model, data, loss=loss, device=device, dtype=dtype, batch_size=batch_size,
        precision=precision, should_stop=should_stop, params=params,
    )  # fmt: skip
    if steps is not None and (top or bottom):
        v0 = np.random.default_rng(options.seed).standard_normal(operator.n)
        theta, residuals = ritz_values(operator.matvec, v0, steps)
        high, high_res = theta[::-1][:top].copy(), residuals[::-1][:top].copy()
        low, low_res = theta[:bottom], residuals[:bottom]
    else:
        high, high_res = (a[::-1].copy() for a in lanczos_ritz(operator, top, "LA", options))
        low, low_res = lanczos_ritz(operator, bottom, "SA", options)
    trace = stderr = None
    if trace_samples:
        trace, stderr = hutchinson_trace(operator, trace_samples, options.seed)
    wall = time.perf_counter() - start
    log.info("hessian: %d params, %d products in %.1f s", operator.n, operator.matvecs, wall)
    settings = {
        "loss": loss,
        "device": str(operator.device),
        "dtype": str(dtype).removeprefix("torch."),
        "precision": operator.precision,
        "batch_size": batch_size,
        "tol": options.tol,
        "maxiter": options.maxiter,
        "steps": steps,
        "seed": options.seed,
        "trace_samples": trace_samples,
    }
    return HessianResult(
        top=high,
        bottom=low,
        trace=trace,
        trace_stderr=stderr,
        n_params=operator.n,
        n_samples=operator.n_samples,
        matvecs=operator.matvecs,
        wall_time_s=wall,
        settings=settings,
        top_residuals=high_res,
        bottom_residuals=low_res,
        tolerance=tolerance(options.tol, np.concatenate([high, low])),
    )
