"""``/healthz``: liveness for Docker's HEALTHCHECK and load balancers (never needs a token)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Request

from api.deps import QueueDep
from api.schemas.common import Health

router = APIRouter(tags=["health"])


def _version() -> str:
    try:
        return version("landscape")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


@router.get("/healthz", response_model=Health, summary="Liveness and queue counts")
def healthz(request: Request, queue: QueueDep) -> Health:
    """Answers while the database is reachable; `workers` counts in-process workers."""
    pool = request.app.state.pool
    return Health(
        status="ok",
        version=_version(),
        jobs=queue.counts(),
        workers=len(pool.workers) if pool is not None else 0,
    )
