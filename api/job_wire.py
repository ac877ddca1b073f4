"""A job as the wire has it: the stored row turned into ``JobPublic``, its stage in words and
its times as ISO 8601 (the queue estimate is ``api/job_estimates.py``'s)."""

from __future__ import annotations

from datetime import datetime, timezone

from api.db import Job
from api.redact import public_stored_error
from api.schemas.common import JobEstimate, JobPublic, Progress, TrainProgress


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat()


def job_public(job: Job, estimate: JobEstimate | None = None) -> JobPublic:
    """The wire shape; ``estimate`` from ``JobQueue.estimates`` (routes that have it)."""
    return JobPublic(
        id=job.id,
        kind=job.kind or "surface",
        status=job.status,
        **_stage(job.stage),
        progress=Progress(done=job.done, total=job.total),
        train=TrainProgress(**job.train_progress) if job.train_progress else None,
        eta_seconds=job.eta_seconds,
        error=public_stored_error(job.error),
        surface_id=job.surface_id,
        label=job.label,
        cancel_requested=job.cancel_requested,
        request=job.request,
        created_at=iso(job.created_at) or "",
        started_at=iso(job.started_at),
        finished_at=iso(job.finished_at),
        estimate=estimate,
    )


def _stage(stored: str) -> dict[str, str | None]:
    """The stored stage as the wire has it: ``estimate:k/K`` (api/runners/surface.py) is
    stage ``estimating`` with its words."""
    if stored.startswith("estimate:"):
        k, _, total = stored.removeprefix("estimate:").partition("/")
        return {"stage": "estimating", "stage_detail": f"estimate stage {k} of {total}"}
    if stored == "exact":
        return {"stage": "exact", "stage_detail": "exact: every point to all samples"}
    return {"stage": stored, "stage_detail": None}
