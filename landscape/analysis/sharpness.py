"""Sharpness along training: λmax of the full-batch training loss, step by step.

Cohen et al. 2021 ("Gradient descent on neural networks typically occurs at the edge of
stability", §3) track the top Hessian eigenvalue during full-batch gradient descent with step
size η: it rises (progressive sharpening) until it reaches about 2/η — the largest curvature
at which gradient descent on a quadratic is stable — and then hovers there while the loss
keeps falling, not monotonically.

λmax is the largest algebraic eigenvalue of the Hessian of the mean loss (``HessianOperator``:
Hessian-vector products by double backward, eval mode), found by Lanczos (ARPACK's ``eigsh``,
one eigenpair). Consecutive measurements along a run are close, so each Lanczos run starts from
the previous eigenvector (``SharpnessTracker``): the same value, fewer products.

Products and the loss run in the engine's precision policy (``compute_in``; ``auto`` is tf32
on CUDA, fp32 elsewhere; bf16 is refused: Lanczos needs products accurate to ~1e-6), and each
measurement records the precision it was taken in.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, eigsh
from torch import Tensor, nn

from landscape.analysis.hessian import HessianOperator, ProductCapError, arpack_cap
from landscape.engine.forward import per_sample_loss
from landscape.engine.precision import compute_in, resolve
from landscape.errors import CancelledError, SpecError
from landscape.specs import DataSpec, DeviceName, LossName, Precision, ResolvedPrecision

log = logging.getLogger(__name__)

WARM_NOISE = 0.1  # share of a random direction in a warm start (see ``top_eigenpair``)


@dataclass(frozen=True)
class SharpnessOptions:
    """How each λmax is found. ``krylov`` is the Lanczos basis per restart (ARPACK's ``ncv``):
    a warm start from last step's eigenvector converges in about one restart. ``tol`` is
    ARPACK's relative accuracy; ``maxiter`` bounds the restarts, and with them the products of
    one measurement (``product_cap``, which the service's cost estimate counts)."""

    krylov: int = 12
    tol: float = 1e-4
    maxiter: int = 20
    seed: int = 0
    batch_size: int = 1024  # samples per product pass: sums are exact, this only sets memory

    def __post_init__(self) -> None:
        if self.krylov < 3:
            raise SpecError(f"sharpness krylov must be >= 3, got {self.krylov}")
        if not self.tol >= 0:
            raise SpecError(f"sharpness tol must be >= 0, got {self.tol!r}")
        if self.maxiter < 1:
            raise SpecError(f"sharpness maxiter must be >= 1, got {self.maxiter}")

    @property
    def product_cap(self) -> int:
        """The most Hessian-vector products one λmax may take (warm and cold tries together)."""
        return arpack_cap(1, self.maxiter, ncv=self.krylov, residuals=False)


@dataclass(frozen=True)
class Sharpness:
    """One measurement: λmax, the mean loss at the same parameters, and its cost."""

    lambda_max: float
    loss: float
    matvecs: int
    vector: np.ndarray  # the unit top eigenvector, flat over ``named_parameters()``


def top_eigenpair(
    operator: HessianOperator, options: SharpnessOptions, v0: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """λmax and its unit eigenvector, Lanczos from ``v0`` (None: a seeded random start), in
    at most ``options.product_cap`` products."""
    n = operator.n
    if n <= options.krylov:  # toy models: the Krylov space would be all of R^n
        values, vectors = np.linalg.eigh(operator.dense())
        return float(values[-1]), vectors[:, -1]
    try:
        with operator.capped(options.product_cap):
            return _warm_or_cold(operator, options, v0)
    except ProductCapError as exc:
        raise SpecError(
            f"Lanczos found no λmax within {options.product_cap} Hessian products "
            f"(maxiter={options.maxiter} restarts of {options.krylov}, tol={options.tol}); "
            "raise them"
        ) from exc


def _warm_or_cold(
    operator: HessianOperator, options: SharpnessOptions, v0: np.ndarray | None
) -> tuple[float, np.ndarray]:
    n = operator.n
    noise = np.random.default_rng(options.seed).standard_normal(n)
    if v0 is None or v0.shape != (n,) or not np.isfinite(v0).all() or not v0.any():
        return _lanczos(operator, options, noise)
    # An exact eigenvector spans an invariant subspace: ARPACK cannot grow a Krylov basis
    # from it (error -9999), so the warm start keeps a little of a random direction.
    warm = v0 / np.linalg.norm(v0) + WARM_NOISE * noise / np.linalg.norm(noise)
    try:
        return _lanczos(operator, options, warm)
    except ArpackError:
        log.info("warm-started Lanczos broke down; starting cold")
        return _lanczos(operator, options, noise)


def _lanczos(
    operator: HessianOperator, options: SharpnessOptions, v0: np.ndarray
) -> tuple[float, np.ndarray]:
    try:
        values, vectors = eigsh(
            operator.as_linear_operator(),
            k=1,
            which="LA",
            v0=v0,
            ncv=options.krylov,
            tol=options.tol,
            maxiter=options.maxiter,
        )
    except ArpackNoConvergence as exc:
        raise SpecError(
            f"Lanczos found no λmax within maxiter={options.maxiter} restarts, "
            f"tol={options.tol}; raise them"
        ) from exc
    return float(values[0]), np.asarray(vectors[:, 0], dtype=np.float64)


@torch.no_grad()
def mean_loss(operator: HessianOperator) -> float:
    """The mean loss at the operator's point (the function whose λmax is measured), in the
    operator's precision, as its products are."""
    total = 0.0
    with compute_in(operator.precision, operator.device):
        for xb, yb in operator.batches:
            logits = operator._logits(operator.point, xb)
            total += float(per_sample_loss(logits, yb, operator.loss).double().sum())
    return total / operator.n_samples


class SharpnessTracker:
    """λmax of one data set's mean loss along a run, each Lanczos warm-started from the last
    eigenvector (Cohen et al. 2021 Appendix: the top eigenvector changes slowly under GD)."""

    def __init__(
        self,
        data: tuple[Tensor, Tensor],
        *,
        loss: LossName = "cross_entropy",
        device: DeviceName | str | torch.device = "auto",
        options: SharpnessOptions | None = None,
        warm_start: bool = True,
        precision: ResolvedPrecision = "fp32",
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.data = data
        self.loss: LossName = loss
        self.device = str(device)
        self.precision: ResolvedPrecision = precision
        self.options = options or SharpnessOptions()
        self.warm_start = warm_start
        self.vector: np.ndarray | None = None
        self.should_stop = should_stop  # asked before every product

    def measure(self, model: nn.Module) -> Sharpness:
        """λmax and loss at the model's parameters; the caller's model is left as it is."""
        operator = HessianOperator(
            model, self.data, loss=self.loss, device=self.device,
            batch_size=self.options.batch_size, precision=self.precision,
            should_stop=self.should_stop,
        )  # fmt: skip
        start = self.vector if self.warm_start else None
        value, vector = top_eigenpair(operator, self.options, start)
        self.vector = vector
        return Sharpness(value, mean_loss(operator), operator.matvecs, vector)


def snapshot_step(path: Path, metadata: dict[str, Any]) -> int | None:
    """The step (epoch) of a snapshot: its metadata's ``epoch``, else the digits of its name."""
    if isinstance(metadata.get("epoch"), int):
        return int(metadata["epoch"])
    found = re.findall(r"\d+", path.stem)
    return int(found[-1]) if found else None


def sample_snapshots(paths: Sequence[Path], limit: int) -> list[Path]:
    """At most ``limit`` of ``paths`` in step order (``snapshot_step`` of their names, so
    ``epoch_1000`` comes after ``epoch_999``), spread evenly over the whole run with its first
    and last kept: a cap keeps the shape of λmax along training, not only its beginning."""
    if limit < 1:
        raise SpecError(f"snapshot limit must be >= 1, got {limit}")
    ordered = sorted(paths, key=lambda p: (snapshot_step(p, {}) or 0, p.name))
    if len(ordered) <= limit:
        return ordered
    if limit == 1:
        return [ordered[-1]]
    picks = np.round(np.linspace(0, len(ordered) - 1, limit)).astype(np.int64)
    return [ordered[int(i)] for i in picks]  # distinct: the spacing is at least 1


def step_size(metadata: dict[str, Any]) -> float | None:
    """η of a snapshot's training when it was constant gradient descent (or SGD without
    momentum); None otherwise: 2/η is the threshold only for a fixed step without momentum."""
    spec = metadata.get("train_spec")
    if not isinstance(spec, dict) or spec.get("schedule") != "constant":
        return None
    if spec.get("optimizer") == "gd" or (
        spec.get("optimizer") == "sgd" and spec.get("momentum") == 0
    ):
        return float(spec["lr"])
    return None


def trajectory_sharpness(
    checkpoints: Sequence[str | Path],
    data: DataSpec | None = None,
    *,
    loss: LossName | None = None,
    device: DeviceName = "auto",
    precision: Precision = "auto",
    options: SharpnessOptions | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[dict[str, Any]]:
    """λmax of the mean training loss at each snapshot, in step order, warm-started along the
    trajectory: one record ``{step, path, lambda_max, loss, lr, matvecs, precision}`` per
    file. ``data`` and ``loss`` default to what the first snapshot was trained on (digits and
    cross-entropy when it does not say); ``precision`` is the engine's policy's (``auto``:
    tf32 on CUDA, fp32 elsewhere; fp32 or tf32 only)."""
    from landscape.data import load_data
    from landscape.engine.devices import resolve_device
    from landscape.sources.checkpoint import load_checkpoint
    from landscape.specs import check_choice, from_dict

    if not checkpoints:
        raise SpecError("sharpness needs at least one checkpoint")
    check_choice("precision", precision, Precision)
    target = resolve_device(device)
    resolved = resolve(precision, target)
    if resolved == "bf16":
        raise SpecError(
            "sharpness is computed in fp32 or tf32 (Lanczos needs Hessian products accurate "
            "to ~1e-6; bf16 gives ~1e-2), got bf16"
        )
    loaded = [(Path(p), *load_checkpoint(p, map_location=target)) for p in checkpoints]
    loaded.sort(key=lambda item: (snapshot_step(item[0], item[2]) or 0, item[0].name))
    recipe = loaded[0][2].get("train_spec") or {}
    if data is None:
        stored = recipe.get("data")
        data = from_dict(DataSpec, stored) if isinstance(stored, dict) else DataSpec()
    if loss is None:
        loss = recipe.get("loss") or "cross_entropy"
    check_choice("loss of sharpness", loss, LossName)  # a loss of the outputs alone
    x, y = load_data(data, "train", device=target)
    tracker = SharpnessTracker(
        (x, y), loss=cast(LossName, loss), device=target, options=options, precision=resolved,
        should_stop=should_stop,
    )  # fmt: skip
    records: list[dict[str, Any]] = []
    total = len(loaded)
    for done, (path, model, meta) in enumerate(loaded):
        if on_progress is not None:
            on_progress(done, total)
        if should_stop is not None and should_stop():
            raise CancelledError(f"sharpness stopped after {done} of {total} snapshots")
        result = tracker.measure(model)
        records.append({
            "step": snapshot_step(path, meta),
            "path": path.name,
            "lambda_max": result.lambda_max,
            "loss": result.loss,
            "lr": step_size(meta),
            "matvecs": result.matvecs,
            "precision": resolved,
        })  # fmt: skip
        log.info("%s: λmax %.4g (%d products)", path.name, result.lambda_max, result.matvecs)
    if on_progress is not None:
        on_progress(total, total)
    return records


GROUP_NAME = "sharpness"  # the surface file's group (docs/format.md)


def group_contents(
    records: Sequence[dict[str, Any]], provenance: dict[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``trajectory_sharpness`` records as the ``sharpness/`` group: one array per column
    (step −1 and η NaN where unknown), the snapshot names and ``provenance`` as attributes."""
    arrays = {
        "step": np.array([-1 if r["step"] is None else r["step"] for r in records], np.int64),
        "lambda_max": np.array([r["lambda_max"] for r in records], np.float64),
        "loss": np.array([r["loss"] for r in records], np.float64),
        "lr": np.array([np.nan if r["lr"] is None else r["lr"] for r in records], np.float64),
    }
    precisions = sorted({str(r["precision"]) for r in records if r.get("precision")})
    attrs = {
        "encoding-type": "landscape-sharpness",
        "encoding-version": "1",
        **({"precision": precisions[0]} if len(precisions) == 1 else {}),
        **provenance,
        "snapshots": [r["path"] for r in records],
    }
    return arrays, attrs


def from_group(arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> list[dict[str, Any]]:
    """The records back from a stored group (NaN and −1 → None)."""

    def value(x: float) -> float | None:
        return float(x) if np.isfinite(x) else None

    names = list(attrs.get("snapshots") or [])
    return [
        {
            "step": None if int(step) < 0 else int(step),
            "path": names[i] if i < len(names) else "",
            "lambda_max": value(lam),
            "loss": value(loss),
            "lr": value(lr),
        }
        for i, (step, lam, loss, lr) in enumerate(
            zip(arrays["step"], arrays["lambda_max"], arrays["loss"], arrays["lr"], strict=True)
        )
    ]
