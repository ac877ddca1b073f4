"""The app factory: ``create_app(settings)`` wires settings, database, queue, routes, web.

``uvicorn --factory api.app:create_app`` or ``landscape serve`` run it. With
``settings.workers > 0`` the app's lifespan also runs that many job workers in this process
(stopped at a chunk boundary on shutdown, so SIGTERM leaves jobs resumable).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.staticfiles import StaticFiles

from api.db import make_engine, make_sessionmaker
from api.errors import landscape_error_handler
from api.jobs import JobQueue
from api.routes import checkpoints, datasets, health, hessian, jobs, models, surfaces, web
from api.runners.base import JobKind, Runner
from api.settings import Settings, get_settings
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

When the server sets `LANDSCAPE_API_TOKEN`, POST/DELETE need `Authorization: Bearer <token>`.
"""


def create_app(
    settings: Settings | None = None, *, runners: Mapping[JobKind, Runner] = RUNNERS
) -> FastAPI:
    """Build the app; tests pass their own ``Settings`` (temp data dir, no workers)."""
    settings = settings or get_settings()
    settings.ensure_dirs()
    engine = make_engine(settings.db_url)
    sessions = make_sessionmaker(engine)
    queue = JobQueue(sessions, settings.lease_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.shutting_down = asyncio.Event()
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
        openapi_tags=[
            {"name": "surfaces", "description": "Request, list, read and download surfaces"},
            {"name": "jobs", "description": "Progress, cancel and event streams of jobs"},
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
    for module in (surfaces, hessian, jobs, checkpoints, models, datasets, health, web):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=settings.web_dir, check_dir=False), name="static")
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
