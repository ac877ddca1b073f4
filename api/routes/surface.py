"""``/api/surfaces``: request a surface (queued job or cached answer), read, download, delete."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy import select

from api.db import SurfaceRecord
from api.deps import QueueDep, ReadAccess, SessionDep, SettingsDep, WriteAccess, error_responses
from api.planning.budget import check_budget
from api.planning.common import surface_path
from api.planning.job_cost import JOB_COSTS
from api.planning.rate import measured_throughput
from api.planning.recipe import recipe_differences
from api.planning.surface import Plan, plan_surface
from api.schedule import QueuePolicy
from api.schemas.common import ID_PATTERN, JobPublic
from api.schemas.surface import (
    EXAMPLE_REQUEST,
    SurfaceCreated,
    SurfaceData,
    SurfaceRequest,
    SurfaceSummary,
)
from api.views import surface_data, surface_summary, unreadable_summary
from landscape.errors import SurfaceFileError
from landscape.storage import Surface, journal_path, read_surface, set_aside

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/surfaces", tags=["surfaces"], dependencies=[ReadAccess])

SurfaceId = Annotated[str, PathParam(pattern=ID_PATTERN, description="surface id (hex)")]

_EXAMPLES = {
    "digits": {"summary": "resnet20-noshort trained on digits, 21×21", "value": EXAMPLE_REQUEST},
    "curve": {
        "summary": "a 1D curve of a small MLP",
        "value": {"model": "mlp-plain", "train": {"epochs": 2}, "grid": {"nx": 41, "dim": 1}},
    },
}


def _record_or_404(session: SessionDep, settings: SettingsDep, surface_id: str) -> SurfaceRecord:
    record = session.get(SurfaceRecord, surface_id)
    if record is None:
        raise HTTPException(404, f"no surface with id {surface_id!r}")
    if not surface_path(settings, surface_id).exists():
        raise HTTPException(
            404,
            f"surface {surface_id!r} has no points yet: its job is waiting, or it failed "
            "(see GET /api/jobs)",
        )
    return record


def read_or_410(path: Path, surface_id: str) -> Surface:
    """The surface file, read once; a damaged one is 410 with what to do about it."""
    try:
        return read_surface(path)
    except SurfaceFileError as exc:
        raise HTTPException(410, _unreadable(surface_id, exc)) from exc


def _created(plan: Plan, job: JobPublic | None, surface: SurfaceSummary | None) -> SurfaceCreated:
    mode = "explore" if plan.estimate is not None and not plan.make_exact else "exact"
    return SurfaceCreated(job=job, surface=surface, mode=mode, mode_reason=plan.mode_reason)


def _unreadable(surface_id: str, exc: Exception) -> str:
    return (
        f"the file of surface {surface_id!r} is unreadable ({exc}); "
        "POST its request again to recompute it"
    )


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

    A `recipe` (`landscape recipe`, `GET /api/surfaces/{id}/recipe`) sets every other field;
    its checkpoint, model and precision must be this server's (422 naming each difference,
    unless `allow_differences`), and other library versions are listed in `differences`.
    """
    differences = recipe_differences(body, settings, session)
    created = _create_surface(body, response, settings, session, queue)
    return created.model_copy(update={"differences": differences})


def _create_surface(
    body: SurfaceRequest,
    response: Response,
    settings: SettingsDep,
    session: SessionDep,
    queue: QueueDep,
) -> SurfaceCreated:
    plan = plan_surface(body, settings, session)
    # a recipe's request is stored spelled out: it reads back to the same surface
    request = body.model_dump(
        mode="json", exclude_none=True, exclude={"recipe", "allow_differences"}
    )
    # the mode chosen, stored as asked: the request reads back to the same surface
    explore = plan.estimate
    request["estimate"] = (
        None
        if explore is None
        else {
            "target": explore.target,
            "kind": "relative" if explore.relative else "absolute",
            "seed": explore.seed,
            "method": explore.method,
        }
    )
    if plan.surface_path.exists():
        summary_record = session.get(SurfaceRecord, plan.surface_id) or SurfaceRecord(
            id=plan.surface_id,
            label=plan.label,
            model=plan.model,
            dataset=plan.dataset,
            checkpoint_id=plan.checkpoint_id,
            request=request,
        )
        try:
            surface = read_surface(plan.surface_path)
        except SurfaceFileError:
            if queue.active_for(plan.surface_id) is None:
                set_aside(plan.surface_path)
            job, _new = queue.submit(plan, request)
            return _created(plan, queue.public(job), None)
        summary = surface_summary(summary_record, surface)
        if summary.status == "complete":
            if session.get(SurfaceRecord, plan.surface_id) is None:
                session.add(summary_record)
                session.commit()
            latest = queue.latest_for(plan.surface_id, "surface")
            response.status_code = 200
            return _created(plan, queue.public(latest) if latest else None, summary)
    job, _new = queue.submit(plan, request)
    return _created(plan, queue.public(job), None)


@router.post(
    "/{surface_id}/exact",
    status_code=202,
    response_model=SurfaceCreated,
    dependencies=[WriteAccess],
    responses={
        200: {"model": SurfaceCreated, "description": "Already exact"},
        **error_responses(401, 404, 409, 410, 422),
    },
    summary="Make an estimated surface exact",
)
def make_exact(
    surface_id: SurfaceId,
    response: Response,
    settings: SettingsDep,
    session: SessionDep,
    queue: QueueDep,
) -> SurfaceCreated:
    """Queue a job that carries every point of an estimated surface to all N samples,
    continuing the same file from where each point stopped (202, priced at the samples it
    has not read); 200 with the surface when every value is already exact; 409 while the
    surface's own job still runs."""
    record = _record_or_404(session, settings, surface_id)
    surface = read_or_410(surface_path(settings, surface_id), surface_id)
    latest = queue.latest_for(surface_id, "surface")
    if surface.estimate is None or surface.estimate.exact().all():
        response.status_code = 200
        why = "an exact surface" if surface.estimate is None else "made exact"
        return SurfaceCreated(
            job=queue.public(latest) if latest else None,
            surface=surface_summary(record, surface),
            mode="exact",
            mode_reason=f"already exact ({why}): every value is a full pass",
        )
    active = queue.active_for(surface_id)
    if active is not None and not (active.plan or {}).get("make_exact"):
        raise HTTPException(
            409,
            f"surface {surface_id!r} is still being estimated by job {active.id} "
            f"({active.status}); make it exact once that job is done, or cancel it first",
        )
    if latest is None or latest.plan is None:
        raise HTTPException(
            409, f"surface {surface_id!r} has no stored plan to continue; POST its request again"
        )
    reason = "make exact: every point read to all N samples, continuing the estimate"
    plan = dataclasses.replace(Plan.from_json(latest.plan), make_exact=True, mode_reason=reason)
    if active is None:
        rate = measured_throughput(session, QueuePolicy.from_settings(settings))
        check_budget(JOB_COSTS["surface"](plan.to_json(), session), settings, rate)
    job, _new = queue.submit(plan, record.request)
    return _created(plan, queue.public(job), None)


@router.get("", response_model=list[SurfaceSummary], summary="List surfaces, newest first")
def list_surfaces(session: SessionDep, settings: SettingsDep) -> list[SurfaceSummary]:
    """Every surface with at least its file started (partial ones included)."""
    records = session.scalars(select(SurfaceRecord).order_by(SurfaceRecord.created_at.desc()))
    out = []
    for record in records:
        path = surface_path(settings, record.id)
        if not path.exists():
            continue
        try:  # one damaged file is listed as such; it never hides the others
            out.append(surface_summary(record, read_surface(path)))
        except SurfaceFileError as exc:
            log.warning("surface %s: %s", record.id, exc)
            out.append(unreadable_summary(record, _unreadable(record.id, exc)))
    return out


@router.get(
    "/{surface_id}",
    response_model=SurfaceData,
    responses=error_responses(401, 404, 409, 410, 422),
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
    surface = read_or_410(surface_path(settings, surface_id), surface_id)
    return surface_data(record, surface, max_points)


@router.get(
    "/{surface_id}/file",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/x-hdf5": {}}, "description": "the HDF5 file"},
        **error_responses(401, 404, 410, 422),
    },
    summary="Download the HDF5 file",
)
def download_surface(surface_id: SurfaceId, session: SessionDep, settings: SettingsDep) -> Any:
    """The self-describing HDF5 file (see docs/format.md); partial while its job runs. A file
    that does not read back (truncated, corrupt) is 410, as on every route of the surface:
    a download must not hand out what the service itself cannot read."""
    _record_or_404(session, settings, surface_id)
    read_or_410(surface_path(settings, surface_id), surface_id)
    return FileResponse(
        surface_path(settings, surface_id),
        media_type="application/x-hdf5",
        filename=f"surface-{surface_id}.h5",
    )


@router.get(
    "/{surface_id}/recipe",
    response_class=JSONResponse,
    responses={
        200: {"content": {"application/json": {}}, "description": "the recipe (a download)"},
        **error_responses(401, 404, 410, 422),
    },
    summary="The recipe that rebuilds a surface",
)
def surface_recipe(surface_id: SurfaceId, session: SessionDep, settings: SettingsDep) -> Any:
    """Everything that made the surface (docs/recipes.md): model, checkpoint sha256 and this
    server's checkpoint id, data subset, directions, grid, loss, precision, estimate settings
    and library versions. `landscape surface --recipe` rebuilds it from the checkpoint file;
    `POST /api/surfaces` with `{"recipe": ...}` here."""
    from landscape.recipe import recipe_of

    record = _record_or_404(session, settings, surface_id)
    try:
        recipe = recipe_of(surface_path(settings, surface_id))
    except SurfaceFileError as exc:
        raise HTTPException(410, _unreadable(surface_id, exc)) from exc
    recipe["checkpoint"]["id"] = record.checkpoint_id
    disposition = f'attachment; filename="surface-{surface_id}.recipe.json"'
    return JSONResponse(recipe, headers={"Content-Disposition": disposition})


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
    from landscape.plot.html import write_html

    _record_or_404(session, settings, surface_id)
    h5 = surface_path(settings, surface_id)
    html = h5.with_suffix(".html")
    if not html.exists() or html.stat().st_mtime < h5.stat().st_mtime:
        surface = await run_in_threadpool(read_or_410, h5, surface_id)
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
    for stale in (path, path.with_suffix(".html"), journal_path(path)):
        stale.unlink(missing_ok=True)
    if record is not None:
        session.delete(record)
        session.commit()
    return Response(status_code=204)
