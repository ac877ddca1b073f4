"""Whether a job fits this server's budgets and, when it does not, a refusal that says what
would: the budget's variable and value, the job's estimate, how long it would run on this
deployment, and what fits instead.

A job over ``LANDSCAPE_MAX_MODEL_PARAMS``, ``LANDSCAPE_MAX_JOB_MEMORY_BYTES`` or
``LANDSCAPE_MAX_JOB_FLOPS`` is a ``SpecError`` (422). Its time is the estimate's FLOPs at the
rate the queue uses for its kind (``api/planning/rate.py``: measured here, else the prior).
Over the FLOPs budget, a surface is told the largest grid that fits, found by re-pricing
smaller grids with the cost model (``surface_estimate``), never extrapolated: the largest
n×n (n×n×n, n points for a curve) and, for a grid with unequal axes, the largest in its
proportions; when not even the smallest grid fits, the part that alone is over (training,
Hessian directions), the most epochs that fit and the largest grid once the net is trained.
A job without a grid is told what to ask less of.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

from api.planning.cost import Estimate, NetCost, Shape, surface_estimate
from api.schedule import QueuePolicy, Throughput
from api.settings import Settings
from landscape.errors import SpecError
from landscape.specs import GridSpec, SurfaceSpec, TrainSpec

# What a job without a grid asks less of to fit the FLOPs budget, by ``Estimate.what``.
REDUCE: Mapping[str, str] = MappingProxyType(
    {
        "report": "fewer pairs, seeds, epochs or surface ranges, or a smaller train_size",
        "Hessian analysis": "fewer eigenvalues (top, bottom), trace samples, density probes or "
        "steps, or curvature map points, or a smaller train_size",
        "gradient flow": "a smaller train_size",
        "sharpness": "fewer snapshots or a smaller train_size",
        "surface": "fewer grid points, epochs or samples, or a smaller model",
    }
)
MIN_AXIS = 2  # the fewest points a grid axis takes (GridRequest)
# The job kind of an estimate (``Estimate.what``), for its kind's rate (``api/schedule.py``).
KIND_OF: Mapping[str, str] = MappingProxyType(
    {
        "surface": "surface",
        "estimated surface": "surface",
        "exact pass": "surface",
        "report": "report",
        "Hessian analysis": "hessian",
        "gradient flow": "gradient_flow",
        "sharpness": "sharpness",
    }
)

# The advice of an over-budget job: from the settings to one clause of the refusal.
Advice = Callable[[Settings], str]


def check_budget(
    estimate: Estimate,
    settings: Settings,
    rate: Throughput | None = None,
    advice: Advice | None = None,
) -> None:
    """Refuse (``SpecError``, 422) a job over one of this server's budgets, naming the budget,
    its value, the job's estimate and its time at ``rate`` (None: the prior of the workers'
    device class, for a planner without the jobs table); over the FLOPs budget also what
    fits (``advice``, else what to reduce)."""
    what = estimate.what
    rate = rate or QueuePolicy.from_settings(settings).assumed()
    kind = KIND_OF.get(what)
    took = f"about {duration(rate.seconds(estimate.time_flops, kind) or 0.0)} on this deployment"
    if estimate.params > settings.max_model_params:
        raise SpecError(
            f"this {what}'s model has {estimate.params:,} parameters, more than this server's "
            f"budget LANDSCAPE_MAX_MODEL_PARAMS = {settings.max_model_params:,} (the job "
            f"would take {took}); choose a smaller model or smaller model_args"
        )
    if estimate.memory_bytes > settings.max_job_memory_bytes:
        raise SpecError(
            f"this {what} needs an estimated {_gib(estimate.memory_bytes)} of memory, more "
            f"than this server's budget LANDSCAPE_MAX_JOB_MEMORY_BYTES = "
            f"{_gib(settings.max_job_memory_bytes)} (the job would take {took}); use a "
            "smaller model, batch or subset"
        )
    if estimate.flops > settings.max_job_flops:
        parts = ", ".join(f"{name} {work.flops:.2g}" for name, work in estimate.parts)
        fits = advice(settings) if advice is not None else f"ask for {REDUCE[what]}"
        raise SpecError(
            f"this {what} is an estimated {estimate.flops:.2g} FLOPs ({parts}), more than "
            f"this server's budget LANDSCAPE_MAX_JOB_FLOPS = {settings.max_job_flops:.2g}: "
            f"{took}, at the {rate.basis_for(kind)}; {fits}"
        )


def surface_advice(
    spec: SurfaceSpec, train: TrainSpec | None, net: NetCost, shape: Shape
) -> Advice:
    """What fits of a surface over the FLOPs budget (``train``: its pending training)."""

    def advise(settings: Settings) -> str:
        largest = largest_grids(spec, train, net, shape, settings)
        if largest is not None:
            return f"the largest grid that fits it is {largest}"
        return _nothing_fits(spec, train, net, shape, settings)

    return advise


def largest_grids(
    spec: SurfaceSpec, train: TrainSpec | None, net: NetCost, shape: Shape, settings: Settings
) -> str | None:
    """The largest equal-sided grid of the request's dimension whose estimate fits the FLOPs
    budget and the grid-point limit, and for unequal axes also the largest in the request's
    proportions; None when not even the smallest fits."""
    counts = _counts(spec.grid)

    def fits(axes: Sequence[int]) -> bool:
        if math.prod(axes) > settings.max_grid_points:
            return False
        grid = _with_counts(spec.grid, axes)
        flops = surface_estimate(dataclasses.replace(spec, grid=grid), train, net, shape).flops
        return flops <= settings.max_job_flops

    # A grid with as many points as the request's costs as much: refused, so n stays below.
    bound = math.ceil(math.prod(counts) ** (1 / len(counts))) + 1
    side = _largest(lambda n: fits([n] * len(counts)), MIN_AXIS, bound)
    if side is None:
        return None
    text = _shape([side] * len(counts))
    longest = max(counts)
    if min(counts) != longest:
        scaled = _largest(lambda m: fits(_scaled(counts, m)), MIN_AXIS, longest)
        if scaled is not None:
            text += f"; in the request's proportions {_shape(_scaled(counts, scaled))}"
    return text


def _nothing_fits(
    spec: SurfaceSpec, train: TrainSpec | None, net: NetCost, shape: Shape, settings: Settings
) -> str:
    """Not even the smallest grid fits: name the part that alone is over the budget."""
    smallest = dataclasses.replace(spec, grid=_with_counts(spec.grid, _smallest(spec.grid)))
    budget = settings.max_job_flops
    estimate = surface_estimate(smallest, train, net, shape)
    fixed = {name: work.flops for name, work in estimate.parts if name != "surface"}
    if train is not None:
        epochs = _largest(
            lambda e: (
                surface_estimate(smallest, dataclasses.replace(train, epochs=e), net, shape).flops
                <= budget
            ),
            1,
            train.epochs,
        )
        text = (
            f"no grid fits it while the net is still to be trained: its training "
            f"({train.epochs} epochs) alone is an estimated {fixed['training']:.2g} FLOPs"
        )
        if epochs is not None:
            smallest_grid = _shape(_smallest(spec.grid))
            text += f"; at most {epochs} epochs fit with the smallest grid, {smallest_grid}"
        trained = largest_grids(spec, None, net, shape, settings)
        if trained is not None:
            text += f"; once the net is trained the largest grid that fits is {trained}"
        return text
    if "directions" in fixed:
        return (
            f"no grid fits it: its Hessian directions alone are an estimated "
            f"{fixed['directions']:.2g} FLOPs; use random directions or a smaller subset"
        )
    return "no grid fits it: use a smaller model, train_size or test_size"


def _largest(fits: Callable[[int], bool], low: int, high: int) -> int | None:
    """The largest k in [low, high] with ``fits(k)``, for ``fits`` true up to some k and
    false beyond it; None when ``fits(low)`` is false."""
    if not fits(low):
        return None
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


def _counts(grid: GridSpec) -> list[int]:
    return [n for n in (grid.n_x, grid.n_y, grid.n_z) if n is not None]


def _smallest(grid: GridSpec) -> list[int]:
    return [MIN_AXIS] * len(_counts(grid))


def _with_counts(grid: GridSpec, axes: Sequence[int]) -> GridSpec:
    """``grid`` with ``axes`` points along its axes (as many as it has), ranges kept."""
    n_y = axes[1] if len(axes) > 1 else None
    n_z = axes[2] if len(axes) > 2 else None
    return dataclasses.replace(grid, n_x=axes[0], n_y=n_y, n_z=n_z)


def _scaled(counts: Sequence[int], longest: int) -> list[int]:
    """``counts`` scaled so their largest is ``longest`` (each axis at least ``MIN_AXIS``)."""
    top = max(counts)
    return [max(MIN_AXIS, round(n * longest / top)) for n in counts]


def _shape(axes: Sequence[int]) -> str:
    if len(axes) == 1:
        return f"{axes[0]} points"
    return f"{'×'.join(str(n) for n in axes)} ({math.prod(axes):,} points)"


def duration(seconds: float) -> str:
    """A run time in the unit a person reads it in."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def _gib(value: float) -> str:
    return f"{value / 2**30:.3g} GiB"
