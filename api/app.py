"""The app factory: ``create_app(settings)`` wires settings, database, queue, routes, web.

``uvicorn --factory api.app:create_app`` or ``landscape serve`` run it. With
``settings.workers > 0`` the app's lifespan also runs that many job workers in this process
(stopped at a chunk boundary on shutdown, so SIGTERM leaves jobs resumable).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from api.db import make_engine, make_sessionmaker
from api.errors import (
    SafeJSONResponse,
    http_error_handler,
    landscape_error_handler,
    validation_error_handler,
)
from api.guard import RequestGuard
from api.jobs import JobQueue
from api.openapi import honest_openapi
from api.routes import (
    checkpoints,
    datasets,
    gradient_flow,
    health,
    hessian,
    jobs,
    losses,
    models,
    report,
    sharpness,
    surface,
    web,
)
from api.routes import config as config_routes
from api.runners.base import JobKind, Runner
from api.schedule import QueuePolicy
from api.settings import Settings, get_settings
from api.timeouts import BodyTimeout
from api.worker import RUNNERS, WorkerPool
from landscape.errors import LandscapeError

log = logging.getLogger(__name__)

DESCRIPTION = """
Loss landscapes (Li et al. 2018, filter-normalized random directions) as a service.

1. `POST /api/surfaces` with a zoo model (trained first) or an uploaded checkpoint id;
2. follow `GET /api/jobs/{id}/events` (server-sent events) until `done`;
3. `GET /api/surfaces/{surface_id}` for the arrays, `/file` for the HDF5 file;
4. optionally `POST /api/surfaces/{surface_id}/hessian` for its curvature (eigenvalues, trace,
   the |λmin/λmax| map of Li et al. 2018 §6), followed like any job.

When the server has tokens (`LANDSCAPE_API_TOKEN`, or several in `LANDSCAPE_API_TOKENS`),
POST/DELETE need `Authorization: Bearer <token>` with one of them (checked before the body is
read); GET needs it too only with `LANDSCAPE_PROTECT_READS=true`.

Limits, all checked before a body is read or a job queued: JSON bodies up to
`LANDSCAPE_MAX_JSON_BYTES` (413), uploads up to `LANDSCAPE_MAX_UPLOAD_BYTES` (413),
`LANDSCAPE_MAX_ACTIVE_JOBS` queued or running jobs in all and
`LANDSCAPE_MAX_ACTIVE_JOBS_PER_CLIENT` per client (429), every job counted as one, a report
too. A client is its token (each token of `LANDSCAPE_API_TOKENS` may have its own allowance),
or on a server without tokens its address (`X-Forwarded-For` counts only from the proxies of
`LANDSCAPE_TRUSTED_PROXIES`); the counts are kept with the jobs, so a restart keeps them.
`NaN`, `Infinity` and numbers beyond float range are refused anywhere in a JSON body (422).
A 422 names each problem's location and message but does not echo the input.
"""


def create_app(
    settings: Settings | None = None, *, runners: Mapping[JobKind, Runner] = RUNNERS
) -> FastAPI:
    """Build the app; tests pass their own ``Settings`` (temp data dir, no workers)."""
    settings = settings or get_settings()
    settings.ensure_dirs()
    engine = make_engine(settings.db_url)
    sessions = make_sessionmaker(engine)
    queue = JobQueue(sessions, settings.lease_seconds, QueuePolicy.from_settings(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.shutting_down = asyncio.Event()
        # The start-up heap (torch, the app) is permanent: moved out of the collector's sight,
        # a full collection no longer pauses every thread (/healthz included) for ~0.25 s.
        gc.collect()
        gc.freeze()
        pool = app.state.pool
        if pool is not None:
            pool.start()
        try:
            yield
        finally:
            app.state.shutting_down.set()
            if pool is not None:
                log.info("stopping workers at the next chunk boundary")
                await run_in_threadpool(pool.stop)
            engine.dispose()

    app = FastAPI(
        title="landscape",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
        docs_url=None,  # /docs: installed files (api/routes/web.py), no CDN
        redoc_url=None,
        openapi_tags=[
            {"name": "surfaces", "description": "Request, list, read and download surfaces"},
            {"name": "jobs", "description": "Progress, cancel and event streams of jobs"},
            {"name": "reports", "description": "Skip-vs-plain reproduction reports"},
            {"name": "checkpoints", "description": "Trained models: list and safe upload"},
            {"name": "catalogue", "description": "Models and data sets a request may name"},
            {"name": "health", "description": "Liveness"},
        ],
    )
    app.state.settings = settings
    app.state.sessions = sessions
    app.state.queue = queue
    app.state.shutting_down = asyncio.Event()
    app.state.pool = (
        WorkerPool(queue, settings, sessions, settings.workers, runners=runners)
        if settings.workers > 0
        else None
    )
    app.add_exception_handler(LandscapeError, landscape_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(HTTPException, http_error_handler)
    routers = (surface, hessian, gradient_flow, sharpness, report, jobs, checkpoints, models,
               losses, datasets)  # fmt: skip
    for module in (*routers, health, web):
        app.include_router(module.router)
    app.include_router(config_routes.router)
    app.mount("/static", StaticFiles(directory=settings.web_dir, check_dir=False), name="static")
    app.add_middleware(RequestGuard, settings=settings, queue=queue, routes=lambda: app.routes)
    app.add_middleware(BodyTimeout)  # added last: outermost, so it times the guard's reads too
    app.openapi = lambda: honest_openapi(app, settings)  # type: ignore[method-assign]
    return app


class RedactTokens(logging.Filter):
    """Keep ``?access_token=`` (used by EventSource and download links) out of access logs."""

    _pattern = re.compile(r"(access_token=)[^&\s]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self._pattern.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        return True
