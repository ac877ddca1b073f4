"""``/api/surfaces``: request a surface (queued job or cached answer), read, download, delete."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, HTTPException, Query, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from sqlalchemy import select

from api.db import SurfaceRecord
from api.deps import QueueDep, ReadAccess, SessionDep, SettingsDep, WriteAccess, error_responses
from api.hessian import hessian_brief, hessian_public, stored_group
from api.jobs import iso, job_public
from api.planning import plan_surface, surface_path
from api.schemas import (
    EXAMPLE_REQUEST,
    ID_PATTERN,
    GridPublic,
    SurfaceCreated,
    SurfaceData,
    SurfaceRequest,
    SurfaceSummary,
    TrajectoryPublic,
    finite_or_none,
)
from landscape.store import Trajectory, read_surface, surface_summary

router = APIRouter(prefix="/api/surfaces", tags=["surfaces"], dependencies=[ReadAccess])

SurfaceId = Annotated[str, PathParam(pattern=ID_PATTERN, description="surface id (hex)")]

_EXAMPLES = {
    "issue-4": {"summary": "resnet20-noshort trained on digits, 21×21", "value": EXAMPLE_REQUEST},
    "curve": {
        "summary": "a 1D curve of a small MLP",
        "value": {"model": "mlp-plain", "train": {"epochs": 2}, "grid": {"nx": 41, "dim": 1}},
    },
}


def summarize(record: SurfaceRecord, path: Path) -> SurfaceSummary:
    """Join the DB's display facts with the file's live status, statistics and key curvature
    numbers (``hessian``: null until an analysis is stored)."""
    info = surface_summary(path)
    return SurfaceSummary(
        id=record.id,
        label=record.label,
        status=info["status"],
        model=record.model,
        dataset=record.dataset,
        ndim=info["ndim"],
        grid=GridPublic(**info["grid"]),
        metrics=info["metrics"],
        done=info["done"],
        total=info["total"],
        created=info.get("created") or iso(record.created_at) or "",
        stats={key: finite_or_none(float(value)) for key, value in info["stats"].items()},
        hessian=hessian_brief(path),
    )


def _record_or_404(session: SessionDep, settings: SettingsDep, surface_id: str) -> SurfaceRecord:
    record = session.get(SurfaceRecord, surface_id)
    if record is None:
        raise HTTPException(404, f"no surface with id {surface_id!r}")
    if not surface_path(settings, surface_id).exists():
        raise HTTPException(404, f"surface {surface_id!r} has no points yet (its job is waiting)")
    return record


@router.post(
    "",
    status_code=202,
    response_model=SurfaceCreated,
    dependencies=[WriteAccess],
    responses={
        200: {"model": SurfaceCreated, "description": "Already computed (cached)"},
        **error_responses(401, 409, 422),
    },
    summary="Request a surface",
)
def create_surface(
    body: Annotated[SurfaceRequest, Body(openapi_examples=_EXAMPLES)],
    response: Response,
    settings: SettingsDep,
    session: SessionDep,
    queue: QueueDep,
) -> SurfaceCreated:
    """Queue a surface (202 with the job), share an identical job already queued or running
    (202, same job), or answer 200 with the surface when the same spec was computed before.

    A zoo `model` is trained first with the `train` recipe (the trained checkpoint is cached
    too); a `checkpoint` id (from `GET /api/checkpoints`) is used as it is.
    """
    plan = plan_surface(body, settings, session)
    request = body.model_dump(mode="json", exclude_none=True)
    if plan.surface_path.exists():
        summary_record = session.get(SurfaceRecord, plan.surface_id) or SurfaceRecord(
            id=plan.surface_id,
            label=plan.label,
            model=plan.model,
            dataset=plan.dataset,
            checkpoint_id=plan.checkpoint_id,
            request=request,
        )
        summary = summarize(summary_record, plan.surface_path)
        if summary.status == "complete":
            if session.get(SurfaceRecord, plan.surface_id) is None:
                session.add(summary_record)
                session.commit()
            latest = queue.latest_for(plan.surface_id, "surface")
            response.status_code = 200
            return SurfaceCreated(job=job_public(latest) if latest else None, surface=summary)
    job, _created = queue.submit(plan, request)
    return SurfaceCreated(job=job_public(job), surface=None)


@router.get("", response_model=list[SurfaceSummary], summary="List surfaces, newest first")
def list_surfaces(session: SessionDep, settings: SettingsDep) -> list[SurfaceSummary]:
    """Every surface with at least its file started (partial ones included)."""
    records = session.scalars(select(SurfaceRecord).order_by(SurfaceRecord.created_at.desc()))
    out = []
    for record in records:
        path = surface_path(settings, record.id)
        if path.exists():
            out.append(summarize(record, path))
    return out


def _even_indices(n: int, max_points: int | None) -> np.ndarray:
    """``max_points`` indices spread evenly over ``range(n)``, both ends kept."""
    if max_points is None or n <= max_points:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, max_points)).astype(int))


def _json_array(values: np.ndarray) -> list[Any]:
    """Nested lists with NaN/inf as None (JSON has no NaN)."""
    as_object = values.astype(object)
    as_object[~np.isfinite(values)] = None
    return as_object.tolist()  # type: ignore[no-any-return]


@router.get(
    "/{surface_id}",
    response_model=SurfaceData,
    responses=error_responses(401, 404, 409, 422),
    summary="A surface with its arrays",
)
def get_surface(
    surface_id: SurfaceId,
    session: SessionDep,
    settings: SettingsDep,
    max_points: Annotated[
        int | None, Query(ge=2, le=100001, description="downsample each axis to at most this")
    ] = None,
) -> SurfaceData:
    """`values[metric]` has `ny` rows of `nx` numbers (a 1D curve: one flat list); points not
    computed yet are `null`, so a partial surface can be drawn while its job runs."""
    record = _record_or_404(session, settings, surface_id)
    path = surface_path(settings, surface_id)
    summary = summarize(record, path)
    surface = read_surface(path)
    ix = _even_indices(len(surface.x), max_points)
    x = surface.x[ix]
    y = None
    values: dict[str, Any] = {}
    if surface.y is None:
        values = {m: _json_array(v[ix]) for m, v in surface.values.items()}
    else:
        iy = _even_indices(len(surface.y), max_points)
        y = [float(v) for v in surface.y[iy]]
        values = {m: _json_array(v[np.ix_(iy, ix)]) for m, v in surface.values.items()}
    group = stored_group(path)
    return SurfaceData(
        **summary.model_dump(exclude={"hessian"}),
        hessian=hessian_public(group) if group is not None else None,
        x=[float(v) if math.isfinite(v) else 0.0 for v in x],
        y=y,
        values=values,
        trajectory=_trajectory_public(surface.trajectory),
    )


def _trajectory_public(trajectory: Trajectory | None) -> TrajectoryPublic | None:
    """The stored path as plain lists; never downsampled (a few dozen epochs at most)."""
    if trajectory is None:
        return None
    coords = trajectory.coords
    return TrajectoryPublic(
        x=[float(v) for v in coords[:, 0]],
        y=[float(v) for v in coords[:, 1]] if coords.shape[1] > 1 else None,
        epochs=[int(e) for e in trajectory.epochs],
        explained_variance=list(trajectory.explained_variance_ratio),
    )


@router.get(
    "/{surface_id}/file",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/x-hdf5": {}}, "description": "the HDF5 file"},
        **error_responses(401, 404, 422),
    },
    summary="Download the HDF5 file",
)
def download_surface(surface_id: SurfaceId, session: SessionDep, settings: SettingsDep) -> Any:
    """The self-describing HDF5 file (see docs/format.md); partial while its job runs."""
    _record_or_404(session, settings, surface_id)
    return FileResponse(
        surface_path(settings, surface_id),
        media_type="application/x-hdf5",
        filename=f"surface-{surface_id}.h5",
    )


@router.get(
    "/{surface_id}/html",
    response_class=FileResponse,
    responses={
        200: {"content": {"text/html": {}}, "description": "a standalone page"},
        **error_responses(401, 404, 409, 422),
    },
    summary="A standalone interactive page",
)
async def surface_html(surface_id: SurfaceId, session: SessionDep, settings: SettingsDep) -> Any:
    """Plotly page with its JavaScript embedded (works offline); rebuilt when the file changes."""
    from landscape.plot import write_html

    _record_or_404(session, settings, surface_id)
    h5 = surface_path(settings, surface_id)
    html = h5.with_suffix(".html")
    if not html.exists() or html.stat().st_mtime < h5.stat().st_mtime:
        surface = await run_in_threadpool(read_surface, h5)
        tmp = html.with_suffix(".html.tmp")
        await run_in_threadpool(write_html, surface, tmp)
        tmp.replace(html)
    return FileResponse(html, media_type="text/html")


@router.delete(
    "/{surface_id}",
    status_code=204,
    dependencies=[WriteAccess],
    responses=error_responses(401, 404, 409, 422),
    summary="Delete a surface",
)
def delete_surface(
    surface_id: SurfaceId, session: SessionDep, settings: SettingsDep, queue: QueueDep
) -> Response:
    """Removes the file and its listing; refused (409) while a job is computing it."""
    record = session.get(SurfaceRecord, surface_id)
    path = surface_path(settings, surface_id)
    if record is None and not path.exists():
        raise HTTPException(404, f"no surface with id {surface_id!r}")
    active = queue.active_for(surface_id)
    if active is not None:
        raise HTTPException(
            409,
            f"this surface is still being computed by job {active.id} ({active.status}); "
            f"cancel the job first (DELETE /api/jobs/{active.id}), then delete the surface",
        )
    for stale in (path, path.with_suffix(".html")):
        stale.unlink(missing_ok=True)
    if record is not None:
        session.delete(record)
        session.commit()
    return Response(status_code=204)
