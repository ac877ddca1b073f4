"""``/api/jobs``: status, cancel and a server-sent-event stream of progress."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select

from api.db import TERMINAL, Job
from api.deps import QueueDep, ReadAccess, SettingsDep, WriteAccess, error_responses
from api.jobs import job_public
from api.schemas.common import ID_PATTERN, JobPublic

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
    return [job_public(job) for job in page]


@router.get(
    "/{job_id}",
    response_model=JobPublic,
    responses=error_responses(401, 404, 422),
    summary="A job's status, progress and ETA",
)
def get_job(job_id: JobId, queue: QueueDep) -> JobPublic:
    return job_public(_job_or_404(queue, job_id))


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
            data = job_public(job).model_dump_json()
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
