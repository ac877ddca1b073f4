"""SurfaceSpec → plan → evaluate in chunks → HDF5: the one call the CLI and the API worker make.

The file on disk is the only state: every finished chunk is recorded (``storage.SurfaceWriter``)
before the next is awaited, so a killed run resumes from its uncomputed points, reusing the
directions stored in the file (never regenerating them: a resumed surface must be the same
surface). Summary numbers (``analysis.surface_metrics``) are computed once the grid is complete.

``compute_module_surface`` is the notebook entry: any ``nn.Module`` and tensors, classification
or regression head, with the same file, resume and cache semantics -- it *is*
``compute_surface``, given a ``sources.module_source``. The module's key
(``sources.modules.model_key``) stands where a checkpoint's sha256 stands, and the tensors'
digest names the data, so the same module, weights and tensors resume (or return) the same file.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import platform
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import torch
from torch import Tensor, nn

from landscape import storage as store
from landscape.analysis.surface_metrics import surface_metrics
from landscape.divergence import check_surface
from landscape.errors import CancelledError, SpecError
from landscape.explore.spec import EstimateSpec
from landscape.losses import Loss, LossFn, get_loss, resolve_loss
from landscape.sources.dict_batches import adapt, is_dict_data
from landscape.sources.model_source import (
    REGRESSION_LOSS,
    ModelSource,
    checkpoint_source,
    module_source,
)
from landscape.sources.modules import data_digest
from landscape.specs import DataSpec, DirectionSpec, EngineOptions, GridSpec, SurfaceSpec

log = logging.getLogger(__name__)

TARGET_CHUNKS = 25  # progress every ~4 %; a kill loses at most one chunk
MAX_CHUNK_POINTS = 64  # cap so cancel and progress stay prompt on fast devices too


Stage = Literal["directions", "grid"]


@dataclass(frozen=True)
class Progress:
    """Points done out of total (counting points finished by earlier, interrupted runs); in
    stage ``directions`` (Hessian directions' Lanczos, before the file exists) steps done out
    of the most it may take."""

    done: int
    total: int
    elapsed_s: float  # this run's wall time so far
    eta_s: float | None  # None until this run has finished a chunk
    stage: Stage = "grid"


def compute_surface(
    spec: SurfaceSpec,
    out: str | Path,
    *,
    options: EngineOptions | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    surface_id: str | None = None,
    source: ModelSource | None = None,
    loss: str | Loss | LossFn | None = None,
    estimate: EstimateSpec | None = None,
    make_exact: bool = False,
    refuse_diverged: bool = False,
) -> Path:
    """Compute (or finish) the surface of ``spec`` into ``out`` and return ``out``.

    ``refuse_diverged``: a grid whose loss is NaN at θ or everywhere raises ``DivergedError``
    and stays partial (``landscape.divergence``) instead of being marked complete.

    ``estimate``: an estimated surface (``landscape.explore``), its own cache identity;
    ``make_exact``: carry the estimated surface in ``out`` (its stored ``estimate``) to n = N.

    ``loss`` (a name, ``Loss`` or ``loss(model, inputs, targets)`` callable; docs/losses.md)
    replaces ``spec.loss``, its identity taking the field's place: in the key, the file and
    the resume check.

    ``source`` is the module and data to evaluate (``sources.model_source``); by default
    the checkpoint file and data set ``spec`` names. An existing ``out`` made from the same spec,
    model (checkpoint bytes or module key) and precision is resumed (or returned at once when
    complete); one from another request raises ``SurfaceFileError``. ``surface_id`` is
    recorded as the file's ``surface_id`` attr (the id a service lists it by). When
    ``should_stop()`` turns true, finished chunks are kept and ``CancelledError`` is raised.
    """
    from landscape.directions import make_directions
    from landscape.engine.devices import resolve_device
    from landscape.engine.plan import resolve_precision

    if loss is not None:
        spec = dataclasses.replace(spec, loss=resolve_loss(loss).name)
    get_loss(spec.loss)  # an unknown name fails before any file is touched
    options = options or EngineOptions()
    # "auto" becomes what the device computes in: the file and the key name the real one.
    precision = resolve_precision(options, resolve_device(options.device))
    options = dataclasses.replace(options, precision=precision)
    out = Path(out)
    start = time.perf_counter()
    if make_exact and estimate is None and out.exists():
        estimate = store.stored_estimate(out)
    source = source or checkpoint_source(spec)

    if out.exists():
        store.check_matches(out, spec, source.key, options.precision, estimate=estimate)
        directions: list[Mapping[str, torch.Tensor]] = list(store.read_directions(out))
        log.info("resuming %s", out)
    else:
        made, directions_info = make_directions(
            source.model,
            spec.directions,
            spec.grid.ndim,
            data=source.data[spec.splits[0]],
            loss=spec.loss,
            device=options.device,  # Hessian directions: products on the engine's device
            on_step=_step_reporter(on_progress, start),
            should_stop=should_stop,  # a stop during them writes no file
        )
        directions = list(made)
        x, y = store.grid_coordinates(spec.grid)
        trajectory = _trajectory(spec, directions_info)
        provenance = _provenance(spec, source, directions_info)
        provenance["surface_id"] = surface_id
        if estimate is not None:  # an estimate is never keyed, nor read, as the exact surface
            provenance["estimate"] = store.estimate_spec_json(estimate)
            base_key = store.surface_key(spec, source.key, options.precision)
            provenance["key"] = store.estimate_key(base_key, estimate)
        store.create_surface_file(
            out,
            spec,
            x=x,
            y=y,
            directions=directions,
            provenance=provenance,
            trajectory=trajectory,
            precision=options.precision,
        )

    if estimate is not None:
        from landscape.explore.run import run_estimate

        def stages(done: int, total: int) -> None:
            if on_progress is not None:
                on_progress(Progress(done, total, time.perf_counter() - start, None))

        run = run_estimate(
            out, spec, estimate, source, directions, options,
            make_exact=make_exact, on_progress=stages, should_stop=should_stop,
        )  # fmt: skip
        _finish(out, spec, run.engine_info, run.wall_time_s, refuse_diverged)
        return out
    surface = store.read_surface(out)
    # Coarse to fine (storage.order): the page can draw the whole shape after a few chunks.
    missing = store.in_point_order(surface.missing(), surface.computed.shape)
    total = spec.grid.n_points
    previous_wall = float(surface.attrs.get("wall_time_s", 0.0) or 0.0)
    if len(missing) == 0:
        if surface.status != "complete":
            _finish(out, spec, None, previous_wall, refuse_diverged)
        return out

    report = _Reporter(on_progress, total, total - len(missing), start)
    writer = store.SurfaceWriter(out)
    with _make_evaluator(source, directions, spec, options, len(missing)) as evaluator:
        engine_info = evaluator.describe()
        chunks = plan_chunks(missing, _chunk_size(len(missing), engine_info, options))
        report(0)
        try:
            if should_stop is not None and should_stop():
                raise CancelledError("surface computation cancelled before it started")
            coords = [store.flat_coordinates(surface.x, surface.y, c, surface.z) for c in chunks]
            for index, results in _stoppable(evaluator.imap(coords), should_stop):
                writer.append(chunks[index], results)
                report(len(chunks[index]))
        except (CancelledError, KeyboardInterrupt):
            writer.close({"wall_time_s": previous_wall + time.perf_counter() - start})
            raise
        except BaseException:
            writer.journal.close()  # what was appended stays in the journal for a resume
            raise
        engine_info = {**evaluator.describe(), "fallbacks": list(source.engine_fallbacks)}
    writer.journal.close()
    _finish(out, spec, engine_info, previous_wall + time.perf_counter() - start, refuse_diverged)
    return out


def _make_evaluator(
    source: ModelSource,
    directions: list[Mapping[str, torch.Tensor]],
    spec: SurfaceSpec,
    options: EngineOptions,
    n_points: int,
) -> Any:
    """The engine for class labels; the exact per-point regression path for real targets."""
    if source.task == "regression":
        from landscape.engine.regression import RegressionEvaluator

        source.engine_fallbacks = [
            "regression head: the engine computes classification losses only"
        ]
        return RegressionEvaluator(source.model, directions, source.data, options=options)
    from landscape.engine.backend import make_evaluator

    options = source.plan_engine(options)
    return make_evaluator(
        source.model, directions, source.data, loss=spec.loss, options=options, n_points=n_points
    )


def _step_reporter(
    callback: Callable[[Progress], None] | None, start: float
) -> Callable[[int, int], None] | None:
    """``on_step(done, total)`` of the directions stage as ``Progress``."""
    if callback is None:
        return None
    return lambda done, total: callback(
        Progress(done, total, time.perf_counter() - start, None, "directions")
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
    """Split the flat indices still to compute (in computing order) into consecutive chunks
    of ``chunk_size``."""
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
    out: Path,
    spec: SurfaceSpec,
    engine_info: Mapping[str, Any] | None,
    wall_time_s: float,
    refuse_diverged: bool,
) -> None:
    surface = store.read_surface(out)
    if refuse_diverged:
        check_surface(surface)
    metrics = _metrics(surface, spec.metric_names)
    attrs: dict[str, Any] = {"wall_time_s": wall_time_s}
    if engine_info is not None:
        attrs["engine"] = dict(engine_info)
        attrs["engine"]["precision"] = engine_info.get("precision") or surface.precision
        for key in ("device", "dtype"):
            if engine_info.get(key) is not None:
                attrs[key] = str(engine_info[key])
    store.mark_complete(out, metrics=metrics, attrs=attrs)


def _metrics(surface: store.Surface, names: tuple[str, ...]) -> dict[str, float]:
    """The summary numbers; a volume's shape numbers are those of its plane through θ (the
    z slice nearest 0), its minima and maxima over the whole volume."""
    if surface.z is None:
        return surface_metrics(surface.x, surface.y, surface.values, names)
    k = int(np.argmin(np.abs(surface.z)))
    metrics = surface_metrics(surface.x, surface.y, {m: surface.values[m][k] for m in names})
    for m in names:
        finite = surface.values[m][np.isfinite(surface.values[m])]
        metrics[f"{m}_min"] = float(finite.min()) if finite.size else math.nan
        metrics[f"{m}_max"] = float(finite.max()) if finite.size else math.nan
    return metrics


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
    spec: SurfaceSpec, source: ModelSource, directions_info: Mapping[str, Any]
) -> dict[str, Any]:
    """Root attrs recording where the numbers came from (docs/format.md lists them)."""
    provenance: dict[str, Any] = {
        "dataset": spec.data.name,
        "seed": spec.directions.seed,
        "normalization": spec.directions.normalization,
        "ignore": spec.directions.ignore,
        "directions_info": dict(directions_info),
        "versions": _versions(),
        "wall_time_s": 0.0,
    }
    if spec.directions.params:  # a parameter subset: the rest of the net is held fixed
        provenance["params"] = list(spec.directions.params)
    if source.task == "regression":
        provenance["task"] = "regression"
        provenance["loss_definition"] = REGRESSION_LOSS
    elif not source.known_architecture:
        provenance["task"] = "classification"
        provenance["loss_definition"] = spec.loss
    if source.task != "regression":
        loss = get_loss(spec.loss)
        provenance["loss_formula"], provenance["loss_source"] = loss.formula, loss.source
    return {**source.provenance, **provenance}


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


AUTO_MARGIN = 1.2  # the grid spans the trajectory's extent × 1.2


def auto_ranges(checkpoint: str, directions: DirectionSpec, ndim: int) -> list[tuple[float, float]]:
    """Per axis, the extent of the PCA trajectory (and the final weights at 0) × 1.2, so the
    whole path lands on the surface (Li et al. 2018, §7). PCA is deterministic, so the
    surface computed next finds the same directions and path."""
    from landscape.directions import make_directions
    from landscape.sources.checkpoint import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    _, info = make_directions(model, directions, ndim)
    coords = np.asarray(info["trajectory_coords"], dtype=np.float64).reshape(-1, ndim)
    ranges = []
    for axis in range(ndim):
        low, high = min(coords[:, axis].min(), 0.0), max(coords[:, axis].max(), 0.0)
        middle, half = (low + high) / 2, max((high - low) / 2 * AUTO_MARGIN, 1e-3)
        ranges.append((float(middle - half), float(middle + half)))
    return ranges


def plane_ranges_of(checkpoint: str, directions: DirectionSpec) -> list[tuple[float, float]]:
    """``checkpoint_plane.plane_ranges`` of the plane through ``checkpoint`` and
    ``directions``' two others: the directions are deterministic, so the surface computed next
    has the same points."""
    from landscape.checkpoint_plane import plane_ranges
    from landscape.directions import make_directions
    from landscape.sources.checkpoint import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    _, info = make_directions(model, directions, 2)
    return plane_ranges(info["points"])


def compute_module_surface(
    model: nn.Module,
    data: Mapping[str, tuple[Tensor, Tensor]] | Mapping[str, Mapping[str, Tensor]],
    out: str | Path,
    *,
    grid: GridSpec | None = None,
    directions: DirectionSpec | None = None,
    loss: str | Loss | LossFn | None = None,
    options: EngineOptions | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    label: str | None = None,
    extra_provenance: Mapping[str, Any] | None = None,
    shift_labels: bool | None = None,
) -> Path:
    """Compute (or finish) the surface of ``model`` on ``data`` (split name → ``(x, y)``, or
    split name → a dict of tensors for ``model(**batch)``: ``sources.dict_batches``, whose
    token-level labels take their own loss; ``shift_labels`` None: shifted for causal LMs).

    ``loss`` defaults to cross-entropy for class labels (any name, ``Loss`` or
    ``loss(model, inputs, targets)`` callable: docs/losses.md); regression takes ``"mse"``
    (plain squared error; ``{split}_acc`` holds R²). Only random directions apply (the others name
    checkpoint files). ``label`` names the model in the file (default: its class name);
    ``extra_provenance`` adds root attrs (the ONNX loader's check report).
    """
    grid, directions = grid or GridSpec(), directions or DirectionSpec()
    if directions.kind != "random":
        raise SpecError("a model object takes random directions (the others name checkpoints)")
    if is_dict_data(data):
        adapted = adapt(model, data, shift_labels=shift_labels)
        if adapted.loss is not None and loss is not None and resolve_loss(loss) != adapted.loss:
            raise SpecError(f"token-level labels take loss {adapted.loss.name!r}, not {loss!r}")
        label = label or type(model).__name__
        model, data, loss = adapted.model, adapted.data, adapted.loss or loss
    elif shift_labels is not None:
        raise SpecError("shift_labels applies to dict batches with token-level labels only")
    pairs: Mapping[str, tuple[Tensor, Tensor]] = data  # type: ignore[assignment]
    source = module_source(model, pairs, label=label, extra_provenance=extra_provenance)
    name = resolve_loss(loss).name if loss is not None else None
    name = name or ("mse" if source.task == "regression" else "cross_entropy")
    if source.task == "regression" and name != "mse":
        raise SpecError(f"real-valued targets need loss 'mse', not {name!r}")
    spec = SurfaceSpec(
        checkpoint=f"python:{source.provenance['model']}",
        data=DataSpec(name=f"tensors:{data_digest(source.data)[:20]}"),
        grid=grid,
        directions=directions,
        splits=tuple(source.data),  # type: ignore[arg-type]  # SurfaceSpec checks each name
        loss=name,
    )
    return compute_surface(
        spec,
        out,
        options=options,
        on_progress=on_progress,
        should_stop=should_stop,
        source=source,
    )
