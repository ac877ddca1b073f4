"""What the analysis sub-resources of a surface (hessian, gradient-flow, sharpness) share: the
surface's record or 404, its computed file, a stored analysis group or 404, and queueing one
analysis job per surface at a time (409 while another runs)."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException

from api.db import Job, SurfaceRecord
from api.deps import SessionDep
from api.jobs import JobQueue
from api.planning.common import surface_path
from api.routes.surface import read_or_410
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
