"""SurfaceSpec → plan → evaluate in chunks → HDF5: the one call the CLI and the API worker make.

The file on disk is the only state: every finished chunk is written before the next is awaited,
so a killed run resumes from its NaN points, reusing the directions stored in the file (never
regenerating them: a resumed surface must be the same surface). Summary numbers (sharpness,
roughness, convexity) are computed once the grid is complete; definitions in docs/format.md.
"""

from __future__ import annotations

import logging
import math
import platform
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from landscape import store
from landscape.errors import CancelledError, SpecError
from landscape.specs import EngineOptions, SurfaceSpec

log = logging.getLogger(__name__)

TARGET_CHUNKS = 25  # progress every ~4 %; a kill loses at most one chunk
MAX_CHUNK_POINTS = 64  # cap so cancel and progress stay prompt on fast devices too
SHARPNESS_RADIUS = 0.25  # in direction units; at least one grid step (see docs/format.md)


@dataclass(frozen=True)
class Progress:
    """Points done out of total (counting points finished by earlier, interrupted runs)."""

    done: int
    total: int
    elapsed_s: float  # this run's wall time so far
    eta_s: float | None  # None until this run has finished a chunk


def compute_surface(
    spec: SurfaceSpec,
    out: str | Path,
    *,
    options: EngineOptions | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Path:
    """Compute (or finish) the surface of ``spec`` into ``out`` and return ``out``.

    An existing ``out`` made from the same spec and checkpoint bytes is resumed (or returned at
    once when complete); one from another request raises ``SurfaceFileError``. When
    ``should_stop()`` turns true, finished chunks are kept and ``CancelledError`` is raised.
    """
    from landscape.backends import make_evaluator
    from landscape.checkpoint import file_digest, load_checkpoint
    from landscape.data import load_data
    from landscape.directions import make_directions

    options = options or EngineOptions()
    out = Path(out)
    start = time.perf_counter()
    model, checkpoint_meta = load_checkpoint(spec.checkpoint)  # first: it names a bad path
    checkpoint_sha = file_digest(spec.checkpoint)
    data: dict[str, tuple[torch.Tensor, torch.Tensor]] = {
        split: load_data(spec.data, split) for split in spec.splits
    }
    _check_model_fits_data(model, data, spec)

    if out.exists():
        store.check_matches(out, spec, checkpoint_sha)
        directions: list[Mapping[str, torch.Tensor]] = list(store.read_directions(out))
        log.info("resuming %s", out)
    else:
        made, directions_info = make_directions(model, spec.directions, spec.grid.ndim)
        directions = list(made)
        x, y = store.grid_coordinates(spec.grid)
        trajectory = _trajectory(spec, directions_info)
        provenance = _provenance(spec, checkpoint_sha, checkpoint_meta, directions_info)
        store.create_surface_file(
            out,
            spec,
            x=x,
            y=y,
            directions=directions,
            provenance=provenance,
            trajectory=trajectory,
        )

    surface = store.read_surface(out)
    missing = store.missing_points(out)
    total = spec.grid.n_points
    previous_wall = float(surface.attrs.get("wall_time_s", 0.0) or 0.0)
    if len(missing) == 0:
        if surface.status != "complete":
            _finish(out, spec, engine_info=None, wall_time_s=previous_wall)
        return out

    report = _Reporter(on_progress, total, total - len(missing), start)
    with make_evaluator(
        model, directions, data, loss=spec.loss, options=options, n_points=len(missing)
    ) as evaluator:
        engine_info = evaluator.describe()
        chunks = plan_chunks(missing, _chunk_size(len(missing), engine_info, options))
        report(0)
        if should_stop is not None and should_stop():
            raise CancelledError("surface computation cancelled before it started")
        coords = [store.flat_coordinates(surface.x, surface.y, c) for c in chunks]
        try:
            for index, results in _stoppable(evaluator.imap(coords), should_stop):
                store.write_points(out, chunks[index], results)
                report(len(chunks[index]))
        except (CancelledError, KeyboardInterrupt):
            store.update_attrs(out, {"wall_time_s": previous_wall + time.perf_counter() - start})
            raise
        engine_info = evaluator.describe()
    _finish(out, spec, engine_info, previous_wall + time.perf_counter() - start)
    return out


def _check_model_fits_data(
    model: torch.nn.Module, data: Mapping[str, tuple[torch.Tensor, torch.Tensor]], spec: SurfaceSpec
) -> None:
    """One forward pass on one sample, so a model/data mismatch is a clear error up front
    rather than a shape error deep inside the engine's worker processes."""
    x, y = next(iter(data.values()))
    try:
        with torch.inference_mode():
            logits = model(x[:1])
    except RuntimeError as exc:
        raise SpecError(
            f"the checkpoint's model does not accept data set {spec.data.name!r} "
            f"(input shape {tuple(x.shape[1:])}): {str(exc).splitlines()[0]}"
        ) from exc
    n_classes = int(y.max()) + 1 if len(y) else 0
    if logits.dim() != 2 or logits.shape[1] < n_classes:
        raise SpecError(
            f"the checkpoint's model outputs {tuple(logits.shape[1:])} per sample but data set "
            f"{spec.data.name!r} has {n_classes} classes"
        )


class _Reporter:
    """Turns finished point counts into ``Progress`` with an ETA from this run's rate."""

    def __init__(
        self,
        callback: Callable[[Progress], None] | None,
        total: int,
        done: int,
        start: float,
    ) -> None:
        self.callback, self.total, self.done, self.start = callback, total, done, start
        self.done_this_run = 0
        self.first_report: float | None = None

    def __call__(self, n_new: int) -> None:
        now = time.perf_counter()
        if self.first_report is None:
            self.first_report = now  # the rate excludes set-up (data, compile)
        self.done += n_new
        self.done_this_run += n_new
        eta: float | None = None
        if self.done_this_run:
            rate = self.done_this_run / max(now - self.first_report, 1e-9)
            eta = (self.total - self.done) / rate
        if self.callback is not None:
            self.callback(Progress(self.done, self.total, now - self.start, eta))


def _stoppable(
    results: Iterator[tuple[int, dict[str, np.ndarray]]], should_stop: Callable[[], bool] | None
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Yield finished chunks; raise CancelledError before awaiting another once asked to stop."""
    for item in results:
        yield item
        if should_stop is not None and should_stop():
            raise CancelledError("surface computation cancelled; finished points are kept")
    # A stop requested during the last chunk still finishes the surface: nothing is lost.


def plan_chunks(missing: np.ndarray, chunk_size: int) -> list[np.ndarray]:
    """Split the flat indices still to compute into consecutive chunks of ``chunk_size``."""
    assert chunk_size >= 1, "chunk size must be positive"
    return [missing[i : i + chunk_size] for i in range(0, len(missing), chunk_size)]


def _chunk_size(n_missing: int, engine_info: Mapping[str, Any], options: EngineOptions) -> int:
    """Points per chunk: about ``TARGET_CHUNKS`` chunks (smooth progress, and at most one
    chunk of work lost to a kill), whole engine calls for every worker (the engine splits a
    chunk across its workers), capped so cancel stays prompt on fast devices."""
    per_call = max(1, int(engine_info.get("points_per_call") or options.points_per_call or 1))
    workers = max(1, int(engine_info.get("workers") or options.workers or 1))
    unit = per_call * workers
    wanted = min(math.ceil(n_missing / TARGET_CHUNKS), MAX_CHUNK_POINTS)
    return max(unit, math.ceil(wanted / unit) * unit)


def _finish(
    out: Path, spec: SurfaceSpec, engine_info: Mapping[str, Any] | None, wall_time_s: float
) -> None:
    surface = store.read_surface(out)
    metrics = surface_metrics(surface.x, surface.y, surface.values, spec.metric_names)
    attrs: dict[str, Any] = {"wall_time_s": wall_time_s}
    if engine_info is not None:
        attrs["engine"] = dict(engine_info)
        for key in ("device", "dtype"):
            if engine_info.get(key) is not None:
                attrs[key] = str(engine_info[key])
    store.mark_complete(out, metrics=metrics, attrs=attrs)


def _trajectory(spec: SurfaceSpec, directions_info: dict[str, Any]) -> store.Trajectory | None:
    """The snapshots' path in the plotted plane, for PCA directions (Li et al. 2018, §7).

    ``pca_directions`` projects ``snapshot − θ`` onto the same unit directions that are stored
    and used for the grid, so its coordinates are in grid units. The epoch of a snapshot comes
    from its file name (``epoch_007.pt`` as ``landscape train --snapshot-every`` writes), else
    its position in the list. The coordinates move from the root attrs to the group.
    """
    if spec.directions.kind != "pca":
        return None
    coords = np.asarray(directions_info.pop("trajectory_coords"), dtype=np.float64)
    names = tuple(Path(p).name for p in spec.directions.trajectory)
    epochs = np.array(
        [
            int(m.group(1)) if (m := re.search(r"epoch_(\d+)", name)) else k
            for k, name in enumerate(names)
        ],
        dtype=np.int64,
    )
    ratio = tuple(float(r) for r in directions_info.get("explained_variance_ratio", ()))
    return store.Trajectory(
        coords=coords.reshape(len(names), -1),
        epochs=epochs,
        names=names,
        explained_variance_ratio=ratio,
    )


def _provenance(
    spec: SurfaceSpec,
    checkpoint_sha: str,
    checkpoint_meta: Mapping[str, Any],
    directions_info: Mapping[str, Any],
) -> dict[str, Any]:
    """Root attrs recording where the numbers came from (docs/format.md lists them)."""
    return {
        "model": str(checkpoint_meta.get("model", "unknown")),
        "model_args": dict(checkpoint_meta.get("model_args", {})),
        "checkpoint_sha256": checkpoint_sha,
        "dataset": spec.data.name,
        "seed": spec.directions.seed,
        "normalization": spec.directions.normalization,
        "ignore": spec.directions.ignore,
        "directions_info": dict(directions_info),
        "versions": _versions(),
        "wall_time_s": 0.0,
    }


def _versions() -> dict[str, str]:
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "h5py": h5py.__version__,
    }
    try:
        versions["landscape"] = importlib_metadata.version("landscape")
    except importlib_metadata.PackageNotFoundError:
        from landscape import __version__

        versions["landscape"] = __version__
    return versions


# --------------------------------------------------------------------------- summary metrics


def surface_metrics(
    x: np.ndarray,
    y: np.ndarray | None,
    values: Mapping[str, np.ndarray],
    metric_names: tuple[str, ...] | None = None,
) -> dict[str, float]:
    """Scalar summaries of a complete grid, per metric (definitions in docs/format.md).

    Every metric gets ``_min``, ``_max`` and ``_center``; losses also get sharpness, roughness
    and convexity numbers. The first loss's are repeated without prefix (``sharpness``, …) as
    the surface's headline numbers.
    """
    names = metric_names or tuple(values)
    center = _center_index(x, y)
    out: dict[str, float] = {}
    headline: str | None = None
    for name in names:
        v = np.asarray(values[name], dtype=np.float64)
        out[f"{name}_min"] = float(np.nanmin(v)) if np.isfinite(v).any() else math.nan
        out[f"{name}_max"] = float(np.nanmax(v)) if np.isfinite(v).any() else math.nan
        out[f"{name}_center"] = float(v[center])
        if name.endswith("_loss"):
            headline = headline or name
            for key, value in _loss_shape_metrics(x, y, v, center).items():
                out[f"{name}_{key}"] = value
    if headline is not None:
        for key in ("sharpness", "sharpness_mean", "roughness", "convex_fraction"):
            out[key] = out[f"{headline}_{key}"]
    out["sharpness_radius"] = _sharpness_radius(x, y)
    return out


def _center_index(x: np.ndarray, y: np.ndarray | None) -> tuple[int, ...]:
    """The grid point nearest the origin (the checkpoint itself when the range spans 0)."""
    i = int(np.argmin(np.abs(x)))
    return (i,) if y is None else (int(np.argmin(np.abs(y))), i)


def _sharpness_radius(x: np.ndarray, y: np.ndarray | None) -> float:
    steps = [np.min(np.diff(a)) for a in (x, y) if a is not None and len(a) > 1]
    return float(max([SHARPNESS_RADIUS, *steps]))


def _loss_shape_metrics(
    x: np.ndarray, y: np.ndarray | None, v: np.ndarray, center: tuple[int, ...]
) -> dict[str, float]:
    f0 = float(v[center])
    radius = _sharpness_radius(x, y)
    if y is None:
        dist = np.abs(x - x[center[0]])
    else:
        xx, yy = np.meshgrid(x - x[center[1]], y - y[center[0]])  # (ny, nx)
        dist = np.hypot(xx, yy)
    near = v[(dist <= radius + 1e-12) & (dist > 0)]
    near = near[np.isfinite(near)]
    # Keskar et al. 2017, eq. 4: ε-sharpness = (max f(θ+δ) − f(θ)) / (1 + f(θ)) · 100
    sharp = 100 * (near.max() - f0) / (1 + f0) if near.size else math.nan
    sharp_mean = 100 * (near.mean() - f0) / (1 + f0) if near.size else math.nan

    span = float(np.nanmax(v) - np.nanmin(v)) if np.isfinite(v).any() else math.nan
    # Roughness: third differences vanish on any locally quadratic surface (a smooth bowl or
    # saddle scores 0) and grow with wiggles and noise; scaled by the value range.
    third = [np.abs(np.diff(v, n=3, axis=k)).ravel() for k in range(v.ndim) if v.shape[k] >= 4]
    first = [np.abs(np.diff(v, axis=k)).ravel() for k in range(v.ndim) if v.shape[k] > 1]
    rough = _safe_mean(third) / span if span > 0 else 0.0
    tv = _safe_mean(first) / span if span > 0 else 0.0
    convex, ratio = _convexity(x, y, v)
    return {
        "sharpness": float(sharp),
        "sharpness_mean": float(sharp_mean),
        "roughness": float(rough),
        "total_variation": float(tv),
        "convex_fraction": convex,
        "nonconvexity": ratio,
    }


def _safe_mean(parts: list[np.ndarray]) -> float:
    joined = np.concatenate(parts) if parts else np.zeros(0)
    joined = joined[np.isfinite(joined)]
    return float(joined.mean()) if joined.size else math.nan


def _convexity(x: np.ndarray, y: np.ndarray | None, v: np.ndarray) -> tuple[float, float]:
    """Fraction of interior points whose finite-difference Hessian is positive semidefinite,
    and the mean of |min(λ_min, 0)| / max|λ| there: 0 where the plane is locally convex, up
    to 1 at a saddle as curved down as up (the in-plane analogue of Li et al. 2018, §6,
    |λ_min/λ_max| of the full Hessian)."""
    if y is None:
        if len(x) < 3:
            return math.nan, math.nan
        h = np.diff(x)[0]
        fxx = (v[2:] - 2 * v[1:-1] + v[:-2]) / h**2
        fxx = fxx[np.isfinite(fxx)]
        if not fxx.size:
            return math.nan, math.nan
        return float(np.mean(fxx >= 0)), float(np.mean(fxx < 0))
    if len(x) < 3 or len(y) < 3:
        return math.nan, math.nan
    hx, hy = np.diff(x)[0], np.diff(y)[0]
    c = v[1:-1, 1:-1]
    fxx = (v[1:-1, 2:] - 2 * c + v[1:-1, :-2]) / hx**2
    fyy = (v[2:, 1:-1] - 2 * c + v[:-2, 1:-1]) / hy**2
    fxy = (v[2:, 2:] - v[2:, :-2] - v[:-2, 2:] + v[:-2, :-2]) / (4 * hx * hy)
    hess = np.stack([np.stack([fxx, fxy], -1), np.stack([fxy, fyy], -1)], -2).reshape(-1, 2, 2)
    hess = hess[np.isfinite(hess).all(axis=(1, 2))]
    if not len(hess):
        return math.nan, math.nan
    eig = np.linalg.eigvalsh(hess)  # ascending: [:, 0] = λ_min, [:, 1] = λ_max
    scale = np.maximum(np.abs(eig).max(axis=1), 1e-300)
    negative = np.abs(np.minimum(eig[:, 0], 0.0)) / scale
    convex = float(np.mean(negative <= 1e-9))
    return convex, float(negative.mean())
