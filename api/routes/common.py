"""What the analysis sub-resources of a surface (hessian, gradient-flow) share: the surface's
record or 404, and queueing one analysis job per surface at a time (409 while another runs)."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException

from api.db import Job, SurfaceRecord
from api.deps import SessionDep
from api.jobs import JobQueue


def record_or_404(session: SessionDep, surface_id: str) -> SurfaceRecord:
    record = session.get(SurfaceRecord, surface_id)
    if record is None:
        raise HTTPException(404, f"no surface with id {surface_id!r}")
    return record


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
