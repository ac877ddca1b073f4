"""What the analysis sub-resources of a surface (hessian, gradient-flow, sharpness) share: the
surface's record or 404, its computed file, a stored analysis group or 404, queueing one
analysis job per surface at a time (409 while another runs), and ``queue_analysis``, the one
shape of their POSTs (each route keeps its own signature, examples and reply model)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from fastapi import HTTPException, Response
from pydantic import BaseModel

from api.db import Job, SurfaceRecord
from api.deps import SessionDep
from api.jobs import JobQueue
from api.planning.common import surface_path
from api.routes.surface import read_or_410
from api.schemas.common import JobPublic
from api.settings import Settings
from landscape.errors import SurfaceFileError
from landscape.storage import Group, Surface


def record_or_404(session: SessionDep, surface_id: str) -> SurfaceRecord:
    record = session.get(SurfaceRecord, surface_id)
    if record is None:
        raise HTTPException(404, f"no surface with id {surface_id!r}")
    return record


def computed_surface(settings: Settings, surface_id: str) -> Surface:
    """The file an analysis reads: none yet is a ``SurfaceFileError`` (409), damaged 410."""
    path = surface_path(settings, surface_id)
    if not path.exists():
        raise SurfaceFileError(
            f"surface {surface_id!r} has no points yet; wait for its job to finish"
        )
    return read_or_410(path, surface_id)


def stored_group_or_404(
    session: SessionDep, settings: Settings, surface_id: str, group_name: str, what: str
) -> Group:
    """The stored analysis group ``group_name`` of the surface, or 404 saying ``what`` is
    missing (a surface without a file has none yet)."""
    record_or_404(session, surface_id)
    path = surface_path(settings, surface_id)
    group = read_or_410(path, surface_id).groups.get(group_name) if path.exists() else None
    if group is None:
        raise HTTPException(404, f"surface {surface_id!r} has no {what} yet")
    return group


def submit_or_409(
    queue: JobQueue,
    kind: str,
    surface_id: str,
    label: str,
    request: dict[str, Any],
    steps: int,
    plan: dict[str, Any],
) -> Job:
    """The queued job for ``request``, or the same request's active job; another active job
    on the surface is a 409 naming it (one job writes a surface file at a time)."""
    job, created = queue.submit_analysis(kind, surface_id, label, request, steps, plan)
    if not created and (job.kind != kind or job.request != request):
        raise HTTPException(
            409,
            f"surface {surface_id!r} is busy with job {job.id} ({job.kind or 'surface'}, "
            f"{job.status}); wait for it or cancel it (DELETE /api/jobs/{job.id})",
        )
    return job


class _Plan(Protocol):
    def to_json(self) -> dict[str, Any]: ...


PlanT = TypeVar("PlanT", bound=_Plan)
RequestT = TypeVar("RequestT", bound=BaseModel)


@dataclass(frozen=True)
class Analysis(Generic[RequestT, PlanT]):
    """One kind of analysis of a surface, as its POST route needs it: the job kind, the file's
    group that stores it, the job label's suffix, and its planning functions."""

    kind: str
    group: str
    label: str
    plan: Callable[[SurfaceRecord, RequestT, Settings, Surface], PlanT]
    covers: Callable[[Group, PlanT, Surface], bool]
    check_budget: Callable[[PlanT, Surface, Settings], None]
    steps: Callable[[PlanT], int]  # the job's progress units
    check_limits: Callable[[RequestT, Settings], None] | None = None  # 422 before the file


def queue_analysis(
    analysis: Analysis[RequestT, PlanT],
    surface_id: str,
    body: RequestT,
    response: Response,
    settings: Settings,
    session: SessionDep,
    queue: JobQueue,
) -> tuple[JobPublic | None, Group | None]:
    """Every analysis POST: the record (404), the request's limits (422, whatever the surface's
    state), the computed file (409/410), the plan; then the stored group when it covers the
    plan (status 200, with the kind's latest job), else the budget (422) and the job (202,
    shared when the same request is active, 409 while another job of the surface runs)."""
    record = record_or_404(session, surface_id)
    if analysis.check_limits is not None:
        analysis.check_limits(body, settings)
    surface = computed_surface(settings, surface_id)
    plan = analysis.plan(record, body, settings, surface)
    group = surface.groups.get(analysis.group)
    if group is not None and analysis.covers(group, plan, surface):
        response.status_code = 200
        latest = queue.latest_for(surface_id, analysis.kind)
        return (queue.public(latest) if latest else None), group
    analysis.check_budget(plan, surface, settings)
    request = {"surface_id": surface_id, **body.model_dump(mode="json")}
    label = f"{record.label or record.model} · {analysis.label}"
    job = submit_or_409(
        queue, analysis.kind, surface_id, label, request, analysis.steps(plan), plan.to_json()
    )
    return queue.public(job), None
