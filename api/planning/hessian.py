"""From a Hessian request on a surface to an ``AnalysisSpec``: limits, inputs, cache check.

``POST /api/surfaces/{id}/hessian`` plans once and stores the plan with the job; the runner
(``api/runners/hessian.py``) executes it with the library's ``analyze``, as
``landscape hessian --surface`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from api.db import SurfaceRecord
from api.planning.budget import check_budget
from api.planning.common import analysis_inputs, surface_path
from api.planning.cost import data_shape, hessian_estimate, surface_cost
from api.planning.serialize import StoredPlan
from api.schemas.hessian import HessianRequest
from api.settings import Settings
from landscape.errors import SpecError
from landscape.specs import AnalysisSpec, Split
from landscape.storage import Group, Surface

SPLIT: Split = "train"  # the Hessian of the plotted training loss, as the CLI's default


@dataclass(frozen=True)
class HessianPlan(StoredPlan):
    """One analysis of one surface, resolved: what the worker computes and the cache compares."""

    surface_id: str
    surface_path: Path
    spec: AnalysisSpec
    steps: int  # job progress units: the spectrum is one, the density one, each map point one


def check_limits(request: HessianRequest, settings: Settings) -> None:
    """This server's caps (422 through SpecError), with the limit in the message."""
    cap = settings.max_hessian_eigenvalues
    for name in ("top", "bottom"):
        if getattr(request, name) > cap:
            raise SpecError(
                f"{name} = {getattr(request, name)} is more than this server's limit of {cap} "
                f"eigenvalues (each costs Lanczos iterations)"
            )
    if request.trace and request.trace_samples > settings.max_trace_samples:
        raise SpecError(
            f"trace_samples = {request.trace_samples} is more than this server's limit of "
            f"{settings.max_trace_samples}"
        )
    if request.density_probes > settings.max_density_probes:
        raise SpecError(
            f"density_probes = {request.density_probes} is more than this server's limit of "
            f"{settings.max_density_probes} (each is a Lanczos run)"
        )
    steps_cap = settings.max_lanczos_steps
    for name in ("density_steps", "curvature_steps"):
        steps = getattr(request, name)
        if steps is not None and steps > steps_cap:
            raise SpecError(
                f"{name} = {steps} is more than this server's limit of {steps_cap} Lanczos steps"
            )
    if request.curvature_grid > settings.max_curvature_grid:
        raise SpecError(
            f"curvature_grid = {request.curvature_grid} is more than this server's limit of "
            f"{settings.max_curvature_grid} points per axis (one Lanczos run per point)"
        )


def plan_hessian(
    record: SurfaceRecord, request: HessianRequest, settings: Settings, surface: Surface
) -> HessianPlan:
    """Resolve an analysis of a surface the service holds (``surface``: its file, read once);
    422 for limits, 409 (SurfaceFileError) while the surface is not complete or its checkpoint
    is gone."""
    from landscape.analysis.analyze import analysis_steps

    check_limits(request, settings)
    checkpoint, data = analysis_inputs(
        record, surface, settings, analysis="Hessian analysis", train_size=request.train_size
    )
    spec = AnalysisSpec(
        checkpoint=str(checkpoint),
        data=data,
        split=SPLIT,
        loss=surface.spec.loss,
        top=request.top,
        bottom=request.bottom,
        trace_samples=request.trace_samples if request.trace else 0,
        curvature_grid=request.curvature_grid,
        curvature_steps=request.curvature_steps,
        density_probes=request.density_probes,
        density_steps=request.density_steps,
        params=surface.spec.directions.params,  # the Hessian of the subset the surface moves
    )
    return HessianPlan(
        surface_id=record.id,
        surface_path=surface_path(settings, record.id),
        spec=spec,
        steps=analysis_steps(spec, surface.x, surface.y),
    )


def check_hessian_budget(plan: HessianPlan, surface: Surface, settings: Settings) -> None:
    """422 when the analysis's estimated cost is over a budget; asked only once the stored
    analysis is known not to cover the request (a stored answer costs nothing)."""
    spec = plan.spec
    map_points = plan.steps - int(spec.spectrum) - int(spec.density_probes > 0)  # one step each
    shape = data_shape(spec.data)
    net = surface_cost(surface, Path(spec.checkpoint), shape)
    check_budget(hessian_estimate(spec, map_points, net, shape), settings)


def covers(group: Group, plan: HessianPlan, surface: Surface) -> bool:
    """True when the stored group already holds every number the plan asks for, computed from
    the same checkpoint, split, loss and data subset (parts not asked for may be there too:
    a stored map is not a reason to recompute the eigenvalues, nor the other way round)."""
    arrays, attrs = group
    data = attrs.get("data") or {}
    spec = plan.spec
    same_inputs = (
        attrs.get("checkpoint_sha256") == surface.attrs.get("checkpoint_sha256")
        and attrs.get("split") == spec.split
        and attrs.get("loss") == spec.loss
        and data.get("name") == spec.data.name
        and data.get("train_size") == spec.data.train_size
        and list(attrs.get("params") or []) == list(spec.params)
    )
    if not same_inputs:
        return False
    for name, wanted in (("top_eigenvalues", spec.top), ("bottom_eigenvalues", spec.bottom)):
        if wanted and len(arrays.get(name, ())) != wanted:
            return False
    if spec.trace_samples:
        samples = (attrs.get("settings") or {}).get("trace_samples")
        if "trace" not in attrs or samples != spec.trace_samples:
            return False
    if spec.density_probes and not _same_density(attrs, spec):
        return False
    if spec.curvature_grid:
        if attrs.get("curvature_steps") != spec.curvature_steps:  # absent: ARPACK
            return False
        from landscape.analysis.curvature import coarse_indices

        n = spec.curvature_grid
        if not _same(arrays.get("curvature_x"), surface.x[coarse_indices(len(surface.x), n)]):
            return False
        if surface.y is not None and not _same(
            arrays.get("curvature_y"), surface.y[coarse_indices(len(surface.y), n)]
        ):
            return False
    return True


def _same_density(attrs: dict[str, Any], spec: AnalysisSpec) -> bool:
    """A stored density answers a request with the same probes, steps and seed (the numbers
    are then the same ones, as probes are drawn from the seed)."""
    return (
        attrs.get("density_probes") == spec.density_probes
        and attrs.get("density_steps") == spec.density_steps
        and attrs.get("density_seed") == spec.seed
    )


def _same(stored: np.ndarray | None, wanted: np.ndarray) -> bool:
    return stored is not None and stored.shape == wanted.shape and np.allclose(stored, wanted)
