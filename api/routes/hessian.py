"""``/api/surfaces/{id}/hessian``: request and read the curvature analysis of a surface.

A sub-resource of surfaces with its own file, so ``surfaces.py`` stays about surfaces; planning
and the cache check are ``api/planning/hessian.py``, the work ``api/runners/hessian.py``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response

from api.deps import QueueDep, ReadAccess, SessionDep, SettingsDep, WriteAccess, error_responses
from api.planning.hessian import check_hessian_budget, check_limits, covers, plan_hessian
from api.routes.common import Analysis, queue_analysis, stored_group_or_404
from api.routes.surface import SurfaceId
from api.runners.base import JobKind
from api.schemas.hessian import HessianCreated, HessianPublic, HessianRequest
from api.views import HESSIAN_GROUP, hessian_public

ANALYSIS = Analysis(
    kind=JobKind.HESSIAN,
    group=HESSIAN_GROUP,
    label="curvature",
    plan=plan_hessian,
    covers=covers,
    check_budget=check_hessian_budget,
    steps=lambda plan: plan.steps,
    check_limits=check_limits,
)

router = APIRouter(prefix="/api/surfaces", tags=["surfaces"], dependencies=[ReadAccess])

_EXAMPLES = {
    "report": {
        "summary": "sharpness numbers: 3 largest, 1 smallest eigenvalue, trace",
        "value": {"top": 3, "bottom": 1, "trace": True, "trace_samples": 20},
    },
    "map": {
        "summary": "the |λmin/λmax| map of Li et al. 2018 §6 on 5×5 grid points",
        "value": {"top": 1, "bottom": 1, "curvature_grid": 5},
    },
    "density": {
        "summary": "the eigenvalue density: 5 SLQ probes of 40 Lanczos steps",
        "value": {"top": 1, "bottom": 1, "density_probes": 5, "density_steps": 40},
    },
}


@router.post(
    "/{surface_id}/hessian",
    status_code=202,
    response_model=HessianCreated,
    dependencies=[WriteAccess],
    responses={
        200: {"model": HessianCreated, "description": "Already stored (cached)"},
        **error_responses(401, 404, 409, 410, 422),
    },
    summary="Request the Hessian analysis of a surface",
)
def create_hessian(
    surface_id: SurfaceId,
    body: Annotated[HessianRequest, Body(openapi_examples=_EXAMPLES)],
    response: Response,
    settings: SettingsDep,
    session: SessionDep,
    queue: QueueDep,
) -> HessianCreated:
    """Queue the analysis (202 with the job; the same analysis already queued or running is
    shared), or answer 200 with the stored numbers when the file already holds all of them.
    409 while the surface is not complete, or while another analysis of it runs; 422 over a
    limit, or when the analysis to run is over this server's budgets."""
    job, group = queue_analysis(ANALYSIS, surface_id, body, response, settings, session, queue)
    return HessianCreated(job=job, hessian=None if group is None else hessian_public(group))


@router.get(
    "/{surface_id}/hessian",
    response_model=HessianPublic,
    responses=error_responses(401, 404, 422),
    summary="The stored Hessian analysis of a surface",
)
def get_hessian(surface_id: SurfaceId, session: SessionDep, settings: SettingsDep) -> HessianPublic:
    """404 until an analysis is stored (also in `GET /api/surfaces/{id}` as `hessian`)."""
    group = stored_group_or_404(session, settings, surface_id, HESSIAN_GROUP, "Hessian analysis")
    return hessian_public(group)
