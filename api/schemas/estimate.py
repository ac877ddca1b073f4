"""Wire schemas of ``POST /api/jobs/estimate``: what a set of requests would queue and how
long it would take on this server, answered without queueing anything (docs/api.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from api.schemas.common import JobEstimate, JobPublic, Strict
from api.schemas.report import ReportRequest
from api.schemas.surface import SurfaceRequest

MAX_ESTIMATED = 12  # requests in one estimate: a preset or a report, with room to spare


class EstimateRequest(Strict):
    """The requests a preset or a report would POST, as they would be POSTed."""

    surfaces: list[SurfaceRequest] = Field(default_factory=list, max_length=MAX_ESTIMATED)
    reports: list[ReportRequest] = Field(default_factory=list, max_length=MAX_ESTIMATED)


class PlannedJob(BaseModel):
    """What POSTing one request would do now."""

    kind: Literal["surface", "report"]
    label: str
    id: str = Field(description="the surface id (or report id) the request names")
    action: Literal["cached", "active", "resume", "new"] = Field(
        description="cached: computed already, nothing runs; active: shares the job queued or "
        "running; resume: its last job was cancelled or failed and POSTing it again resumes "
        "from the finished part (ask first); new: a new job"
    )
    job: JobPublic | None = Field(
        description="active: the job it shares; resume: the cancelled or failed job"
    )
    estimate: JobEstimate | None = Field(
        description="active, resume and new: its cost and, if queued now, its place and times"
    )


class EstimateReply(BaseModel):
    jobs: list[PlannedJob]
    new_jobs: int = Field(description="jobs that POSTing every request would queue (resume too)")
    seconds: float | None = Field(
        description="their estimated run time, all together (null: one is unknown)"
    )
    end_at: str | None = Field(
        description="when the last of them would end if queued now (ISO 8601, UTC)"
    )
    basis: str = Field(description="how seconds were obtained from FLOPs, in words")
