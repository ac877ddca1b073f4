"""The estimated surface's loop: the centre once, a first stage at every point in the
coarse-to-fine order, then rounds of one more look (to the prefix ``stopping.next_sizes``
plans) at the points not yet at target, in the refinement order of ``stopping``; or, to make
a surface exact, every point straight to N.

The file is the only state: each finished chunk's sums go to the estimate journal before the
next chunk starts (``storage.estimate``), so a killed run resumes with every finished stage.
``compute_surface`` creates or checks the file and calls ``run_estimate``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from landscape import storage as store
from landscape.errors import CancelledError, SpecError, SurfaceFileError
from landscape.explore import estimator
from landscape.explore.estimator import simultaneous_z, strata_of
from landscape.explore.permutation import ladder, split_permutation
from landscape.explore.prefix_engine import PrefixEvaluator
from landscape.explore.spec import EstimateSpec
from landscape.explore.stopping import MAX_LOOKS, at_target, next_sizes, priorities
from landscape.sources.model_source import ModelSource
from landscape.specs import EngineOptions, SurfaceSpec
from landscape.storage import estimate as estimate_store
from landscape.storage.estimate import SurfaceEstimate

log = logging.getLogger(__name__)

# A journaled chunk: points in refinement order, at least CHUNK_MIN_POINTS and more until
# their reads reach CHUNK_SAMPLES (at most CHUNK_POINTS); a kill loses at most one chunk's
# stage. Enough calls that the lanes share a chunk evenly, and enough reads that they wait
# for each other once per chunk, not once per few short calls.
CHUNK_SAMPLES = 1 << 17
CHUNK_MIN_POINTS = 32
CHUNK_POINTS = 512


@dataclass(frozen=True)
class EstimateRun:
    """What the caller records once the surface is at target (or exact)."""

    engine_info: dict[str, Any]
    wall_time_s: float


def run_estimate(
    out: Path,
    spec: SurfaceSpec,
    estimate: EstimateSpec,
    source: ModelSource,
    directions: list[Mapping[str, torch.Tensor]],
    options: EngineOptions,
    *,
    make_exact: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> EstimateRun:
    """Bring every point of ``out`` to its target (``make_exact``: to n = N); see module
    docstring. Raises ``CancelledError`` (finished stages kept) when ``should_stop()``."""
    if source.task == "regression":
        raise SpecError("estimated surfaces need class labels; real-valued targets run exact")
    start = time.perf_counter()
    surface = store.read_surface(out)
    previous_wall = float(surface.attrs.get("wall_time_s", 0.0) or 0.0)
    data: dict[str, tuple[torch.Tensor, torch.Tensor]] = {s: source.data[s] for s in spec.splits}
    state = surface.estimate
    strata = {s: split_strata(x, y) for s, (x, y) in data.items()}
    if state is None:
        perms = {s: split_permutation(strata[s], estimate.seed, s) for s in data}
    else:
        _check_data(out, state, strata)
        perms = {s: state.splits[s].permutation for s in data}
    evaluator = PrefixEvaluator(
        source.model,
        directions,
        data,
        perms,
        strata,
        loss=spec.loss,
        options=source.plan_engine(options),
    )
    if state is None:
        centre = evaluator.centre()
        stages = {s: ladder(c.size, estimate.first_stage) for s, c in centre.items()}
        # a look at N reads the whole split (the exact value): only the looks before it share
        # the error rate, and a small split has fewer sizes below N than MAX_LOOKS
        z = {
            s: simultaneous_z(min(MAX_LOOKS, len(st) - 1), estimate.level)
            for s, st in stages.items()
        }
        estimate_store.add_estimate(
            out, estimate, centre, perms, z, stages, int(np.prod(surface.computed.shape))
        )
        state = store.read_surface(out).estimate
        assert state is not None
    evaluator.set_centre({s: state.splits[s].centre for s in spec.splits})
    coords = store.flat_coordinates(
        surface.x, surface.y, np.arange(int(np.prod(surface.computed.shape))), surface.z
    )
    if make_exact and not state.exact().all():
        estimate_store.fold_estimate(out, {"status": "partial"})
    writer = estimate_store.EstimateWriter(out, list(spec.splits))
    try:
        _refine(state, evaluator, coords, writer, make_exact, on_progress, should_stop)
    except (CancelledError, KeyboardInterrupt):
        writer.close()
        estimate_store.fold_estimate(out, {"wall_time_s": previous_wall + _since(start)})
        raise
    except BaseException:
        writer.close()  # what was appended stays in the journal for a resume
        raise
    writer.close()
    estimate_store.fold_estimate(out)
    info = {**evaluator.describe(), "fallbacks": list(source.engine_fallbacks)}
    return EstimateRun(engine_info=info, wall_time_s=previous_wall + _since(start))


def _since(start: float) -> float:
    return time.perf_counter() - start


def split_strata(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """The strata of a split's samples, in the data's order: class and input-norm quantile."""
    norms = torch.linalg.vector_norm(x.reshape(len(x), -1).float(), dim=1)
    return strata_of(y.cpu().numpy(), norms.cpu().numpy())


def _check_data(out: Path, state: SurfaceEstimate, strata: Mapping[str, np.ndarray]) -> None:
    """A resumed estimate reads the split it started on: same size, same strata."""
    for split, here in strata.items():
        part = state.splits.get(split)
        if part is None or part.size != len(here):
            raise SurfaceFileError(
                f"{store.hdf5.name(out)} was estimated on another {split} split "
                f"(its permutation has {part.size if part else 0} samples, the data "
                f"{len(here)}): choose another --out"
            )
        if not np.array_equal(part.centre.stratum, here[part.permutation]):
            raise SurfaceFileError(
                f"{store.hdf5.name(out)} was estimated on other {split} samples (their labels "
                "or inputs differ from this data set's): choose another --out"
            )


def pending(state: SurfaceEstimate, make_exact: bool) -> dict[str, np.ndarray]:
    """Per split, the flat points that still sample it: not at target (or not exact)."""
    out = {}
    for split, part in state.splits.items():
        n = part.n()
        if make_exact:
            out[split] = n < part.size
            continue
        value, se = state.value(split, "loss")
        out[split] = (n < part.size) & ((n == 0) | ~at_target(value, se, part.z, state.spec))
    return out


def _refine(
    state: SurfaceEstimate,
    evaluator: PrefixEvaluator,
    coords: np.ndarray,
    writer: estimate_store.EstimateWriter,
    make_exact: bool,
    on_progress: Callable[[int, int], None] | None,
    should_stop: Callable[[], bool] | None,
) -> None:
    """Rounds of one stage (``make_exact``: the rest of the split) at every pending point, in
    journaled chunks (``CHUNK_SAMPLES``)."""
    rank = np.empty(coords.shape[0], dtype=np.int64)
    rank[store.point_order(state.shape)] = np.arange(rank.size)
    first = next(iter(state.splits))
    total = coords.shape[0]
    while True:
        todo = pending(state, make_exact)
        waiting = np.logical_or.reduce(list(todo.values()))
        if on_progress is not None:
            on_progress(int(total - waiting.sum()), total)
        if not waiting.any():
            return
        value, se = state.value(first, "loss")
        classes = priorities(value, se, state.splits[first].z, state.shape)
        points = np.flatnonzero(waiting)
        points = points[np.lexsort((rank[points], classes[points]))]
        # each point's look this round, planned before any is taken (a look changes only
        # its own point's sums): (start, stop) per split, 0:0 where the split is at target
        looks = {
            split: _looks(part, state.spec, points, todo[split][points], make_exact)
            for split, part in state.splits.items()
        }
        work = np.cumsum(sum(stop - start for start, stop in looks.values()))
        lo = 0
        while lo < len(points):
            hi = int(np.searchsorted(work, (work[lo - 1] if lo else 0) + CHUNK_SAMPLES))
            hi = min(max(hi + 1, lo + CHUNK_MIN_POINTS), lo + CHUNK_POINTS, len(points))
            chunk = points[lo:hi]
            for split, (start, stop) in looks.items():
                read = (stop[lo:hi] > start[lo:hi]).nonzero()[0]
                rows = chunk[read]
                sums = evaluator.sums(coords[rows], split, start[lo:hi][read], stop[lo:hi][read])
                state.splits[split].sums[rows] += sums
            writer.append(chunk, state)
            lo = hi
            if should_stop is not None and should_stop():
                raise CancelledError("estimate cancelled; every finished stage is kept")


def _looks(
    part: estimate_store.SplitEstimate,
    spec: EstimateSpec,
    points: np.ndarray,
    reading: np.ndarray,
    make_exact: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Where one more look of the split at each of ``points`` starts and stops: from where
    the point stands to the next planned size (``make_exact``: to N); 0:0 where not
    ``reading``."""
    n = part.n()[points]
    if make_exact:
        stop = np.full_like(n, part.size)
    else:
        value, se = estimator.estimate(part.sums[points], part.centre, "loss", spec.method)
        stop = next_sizes(n, part.sums[points, 1], value, se, part.z, spec, part.stages)
    start = np.where(reading, n, 0)
    return start, np.where(reading, stop, 0).astype(np.int64)
