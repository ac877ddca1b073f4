"""``/api/jobs``: status, cancel and a server-sent-event stream of progress."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select

from api.db import TERMINAL, Job
from api.deps import (
    QueueDep,
    ReadAccess,
    SessionDep,
    SettingsDep,
    WriteAccess,
    error_responses,
)
from api.job_wire import job_public
from api.planning.job_cost import job_flops
from api.planning.report import REPORT_FILE, plan_report
from api.planning.surface import plan_surface
from api.schemas.common import ID_PATTERN, JobPublic
from api.schemas.estimate import EstimateReply, EstimateRequest, PlannedJob
from landscape.errors import SurfaceFileError
from landscape.storage import read_surface

router = APIRouter(prefix="/api/jobs", tags=["jobs"], dependencies=[ReadAccess])

JobId = Annotated[str, PathParam(pattern=ID_PATTERN, description="job id (hex)")]
KEEPALIVE_SECONDS = 15.0
MAX_PAGE = 500


def _job_or_404(queue: QueueDep, job_id: str) -> Job:
    job = queue.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job with id {job_id!r}")
    return job


@router.get("", response_model=list[JobPublic], summary="List jobs, newest first")
def list_jobs(
    queue: QueueDep,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="jobs per page")] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9, description="jobs to skip (newest first)")] = 0,
) -> list[JobPublic]:
    """One page of jobs; `X-Total-Count` gives the number of all jobs, so the next page is at
    `offset + limit` while that is below the total."""
    newest_first = select(Job).order_by(Job.created_at.desc(), Job.id.desc())
    with queue.sessions() as session:
        total = int(session.scalar(select(func.count()).select_from(Job)) or 0)
        page = list(session.scalars(newest_first.offset(offset).limit(limit)))
    response.headers["X-Total-Count"] = str(total)
    estimates = queue.estimates()
    return [job_public(job, estimates.get(job.id)) for job in page]


@router.get(
    "/{job_id}",
    response_model=JobPublic,
    responses=error_responses(401, 404, 422),
    summary="A job's status, progress, queue position and ETA",
)
def get_job(job_id: JobId, queue: QueueDep) -> JobPublic:
    """`estimate` says where an active job stands in the fair queue (docs/api.md)."""
    return queue.public(_job_or_404(queue, job_id))


@router.delete(
    "/{job_id}",
    response_model=JobPublic,
    dependencies=[WriteAccess],
    responses=error_responses(401, 404, 422),
    summary="Cancel a job",
)
def cancel_job(job_id: JobId, queue: QueueDep, settings: SettingsDep) -> JobPublic:
    """A queued job is cancelled at once; a running one stops within one chunk (waited for up
    to a few seconds; `cancel_requested` is true if it is still winding down). Finished points
    stay in the partial surface, and a later identical request resumes from them."""
    _job_or_404(queue, job_id)
    job = queue.cancel(job_id, wait_seconds=settings.cancel_wait_seconds)
    assert job is not None
    return job_public(job)


@router.post(
    "/estimate",
    response_model=EstimateReply,
    responses=error_responses(401, 422),
    summary="What requests would queue and how long they would take (queues nothing)",
)
def estimate_jobs(
    body: EstimateRequest, queue: QueueDep, settings: SettingsDep, session: SessionDep
) -> EstimateReply:
    """Plans each request as its POST would (a request it would refuse is 422 here too) and
    says what POSTing it now would do: nothing (`cached`), share a job (`active`), resume a
    cancelled or failed one (`resume`: a page asks first), or queue a `new` one; with each
    job's estimated cost and, were they all queued now, its place in the fair queue."""
    planned: list[tuple[PlannedJob, float | None]] = []
    for request in body.surfaces:
        plan = plan_surface(request, settings, session)
        complete = _complete(plan.surface_path)
        flops = None if complete else job_flops("surface", plan.to_json(), session)
        planned.append((_planned(queue, "surface", plan.label, plan.surface_id, complete), flops))
    for report in body.reports:
        report_plan = plan_report(report, settings)
        complete = (report_plan.out_dir / REPORT_FILE).exists()
        flops = None if complete else job_flops("report", report_plan.to_json(), session)
        label = "skip vs plain · " + ", ".join(f"{a}/{b}" for a, b in report_plan.spec["pairs"])
        planned.append((_planned(queue, "report", label, report_plan.report_id, complete), flops))
    queued = {item.id: flops for item, flops in planned if item.action in ("new", "resume")}
    kinds = {item.id: item.kind for item, _flops in planned}
    estimates = queue.estimates(hypothetical=queued, kinds=kinds)
    jobs = []
    for item, _flops in planned:
        key = item.job.id if item.action == "active" and item.job else item.id
        jobs.append(item.model_copy(update={"estimate": estimates.get(key)}))
    mine = [estimates[i] for i in queued if i in estimates]
    seconds = [e.seconds for e in mine]
    ends = [e.end_at for e in mine]
    return EstimateReply(
        jobs=jobs,
        new_jobs=len(queued),
        seconds=None if None in seconds else sum(s for s in seconds if s is not None),
        end_at=None if None in ends else max((e for e in ends if e is not None), default=None),
        basis=queue.throughput().basis,
    )


def _complete(path: Path) -> bool:
    try:
        return path.exists() and read_surface(path).status == "complete"
    except SurfaceFileError:
        return False  # set aside and recomputed by the POST


def _planned(
    queue: QueueDep, kind: Literal["surface", "report"], label: str, key: str, complete: bool
) -> PlannedJob:
    active = queue.active_for(key)
    latest = queue.latest_for(key, kind)
    action: Literal["cached", "active", "resume", "new"]
    if active is not None:
        action, job = "active", active
    elif complete:
        action, job = "cached", None
    elif latest is not None and latest.status in ("cancelled", "failed"):
        action, job = "resume", latest
    else:
        action, job = "new", None
    return PlannedJob(
        kind=kind,
        label=label,
        id=key,
        action=action,
        job=job_public(job) if job is not None else None,
        estimate=None,
    )


def _sse(event: str, data: str) -> str:
    return f"event: {event}\ndata: {data}\n\n"


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`event: progress` (data: Job) on every change, then one "
            "`event: done|failed|cancelled` and the stream ends",
        },
        **error_responses(401, 404, 422),
    },
    summary="Follow a job (server-sent events)",
)
async def job_events(
    job_id: JobId, request: Request, queue: QueueDep, settings: SettingsDep
) -> StreamingResponse:
    """Works with the browser's `EventSource` and with `curl -N`."""
    await run_in_threadpool(_job_or_404, queue, job_id)
    shutting_down: asyncio.Event = request.app.state.shutting_down

    async def stream() -> AsyncIterator[str]:
        last, last_sent = "", time.monotonic()
        while True:
            job = await run_in_threadpool(queue.get, job_id)
            if job is None:  # deleted under us
                return
            # Queued jobs carry their position and estimated start, which move as the jobs
            # ahead of them run: a change there is an event too.
            public = await run_in_threadpool(queue.public, job)
            data = public.model_dump_json()
            if job.status in TERMINAL:
                yield _sse(job.status, data)
                return
            if data != last:
                yield _sse("progress", data)
                last, last_sent = data, time.monotonic()
            elif time.monotonic() - last_sent > KEEPALIVE_SECONDS:
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
            if shutting_down.is_set() or await request.is_disconnected():
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(shutting_down.wait(), settings.events_poll_seconds)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
