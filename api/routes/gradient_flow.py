"""``/api/surfaces/{id}/gradient-flow``: request and read the gradient flow of a surface's
checkpoint (per-layer ``‖∂L/∂W‖``, at initialization and trained), stored in its file.

Planning is ``api/planning/gradient_flow.py``, the work ``api/runners/gradient_flow.py``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response

from api.deps import QueueDep, ReadAccess, SessionDep, SettingsDep, WriteAccess, error_responses
from api.planning.gradient_flow import check_flow_budget, flow_covers, plan_gradient_flow
from api.routes.common import Analysis, queue_analysis, stored_group_or_404
from api.routes.surface import SurfaceId
from api.runners.base import JobKind
from api.schemas.gradient_flow import GradientFlowCreated, GradientFlowPublic, GradientFlowRequest
from api.views import GRADIENT_FLOW_GROUP, gradient_flow_public

ANALYSIS = Analysis(
    kind=JobKind.GRADIENT_FLOW,
    group=GRADIENT_FLOW_GROUP,
    label="gradient flow",
    plan=plan_gradient_flow,
    covers=flow_covers,
    check_budget=check_flow_budget,
    steps=lambda _plan: 2,  # at initialization, trained
)

router = APIRouter(prefix="/api/surfaces", tags=["surfaces"], dependencies=[ReadAccess])


@router.post(
    "/{surface_id}/gradient-flow",
    status_code=202,
    response_model=GradientFlowCreated,
    dependencies=[WriteAccess],
    responses={
        200: {"model": GradientFlowCreated, "description": "Already stored (cached)"},
        **error_responses(401, 404, 409, 410, 422),
    },
    summary="Request the gradient flow of a surface's checkpoint",
)
def create_gradient_flow(
    surface_id: SurfaceId,
    body: Annotated[GradientFlowRequest, Body()],
    response: Response,
    settings: SettingsDep,
    session: SessionDep,
    queue: QueueDep,
) -> GradientFlowCreated:
    """Queue it (202 with the job; one already queued for the surface is shared), or 200 with
    the stored profiles when the file holds them for this checkpoint, subset and BN mode. 409
    while the surface is not complete, or while another job of it runs; 422 when the flow to
    compute is over this server's budgets."""
    job, group = queue_analysis(ANALYSIS, surface_id, body, response, settings, session, queue)
    shown = None if group is None else gradient_flow_public(group)
    return GradientFlowCreated(job=job, gradient_flow=shown)


@router.get(
    "/{surface_id}/gradient-flow",
    response_model=GradientFlowPublic,
    responses=error_responses(401, 404, 422),
    summary="The stored gradient flow of a surface: at initialization and trained",
)
def get_gradient_flow(
    surface_id: SurfaceId, session: SessionDep, settings: SettingsDep
) -> GradientFlowPublic:
    """404 until a gradient flow is stored."""
    group = stored_group_or_404(session, settings, surface_id, GRADIENT_FLOW_GROUP, "gradient flow")
    return gradient_flow_public(group)
