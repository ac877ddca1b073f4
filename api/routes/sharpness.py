"""``/api/surfaces/{id}/sharpness``: request and read λmax of the training loss along the
training of a surface's checkpoint (its snapshots), stored in its file.

Planning is ``api/planning/sharpness.py``, the work ``api/runners/sharpness.py``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response

from api.deps import QueueDep, ReadAccess, SessionDep, SettingsDep, WriteAccess, error_responses
from api.planning.sharpness import check_sharpness_budget, plan_sharpness, sharpness_covers
from api.routes.common import Analysis, queue_analysis, stored_group_or_404
from api.routes.surface import SurfaceId
from api.runners.base import JobKind
from api.schemas.sharpness import (
    SharpnessCreated,
    SharpnessPoint,
    SharpnessPublic,
    SharpnessRequest,
)
from landscape.storage import Group

GROUP = "sharpness"  # landscape.analysis.sharpness.GROUP_NAME
ANALYSIS = Analysis(
    kind=JobKind.SHARPNESS,
    group=GROUP,
    label="sharpness",
    plan=plan_sharpness,
    covers=sharpness_covers,
    check_budget=check_sharpness_budget,
    steps=lambda plan: len(plan.snapshots),
)

router = APIRouter(prefix="/api/surfaces", tags=["surfaces"], dependencies=[ReadAccess])


def sharpness_public(group: Group) -> SharpnessPublic:
    from landscape.analysis.sharpness import from_group

    arrays, attrs = group
    points = [
        SharpnessPoint(
            step=r["step"], snapshot=r["path"], lambda_max=r["lambda_max"], loss=r["loss"],
            lr=r["lr"],
        )
        for r in from_group(dict(arrays), dict(attrs))
    ]  # fmt: skip
    data = attrs.get("data") or {}
    kept = attrs.get("snapshots_kept")
    return SharpnessPublic(
        points=points,
        checkpoint=attrs.get("checkpoint"),
        loss=attrs.get("loss"),
        train_size=data.get("train_size"),
        snapshots_kept=None if kept is None else int(kept),
        sampled=kept is not None and int(kept) > len(points),
    )


@router.post(
    "/{surface_id}/sharpness",
    status_code=202,
    response_model=SharpnessCreated,
    dependencies=[WriteAccess],
    responses={
        200: {"model": SharpnessCreated, "description": "Already stored (cached)"},
        **error_responses(401, 404, 409, 410, 422),
    },
    summary="Request λmax along the training of a surface's checkpoint",
)
def create_sharpness(
    surface_id: SurfaceId,
    body: Annotated[SharpnessRequest, Body()],
    response: Response,
    settings: SettingsDep,
    session: SessionDep,
    queue: QueueDep,
) -> SharpnessCreated:
    """Queue it (202 with the job), or 200 with the stored points when the file holds them
    for this checkpoint, subset and snapshots. 409 while the surface is not complete or
    another job of it runs; 422 over this server's budgets."""
    job, group = queue_analysis(ANALYSIS, surface_id, body, response, settings, session, queue)
    return SharpnessCreated(job=job, sharpness=None if group is None else sharpness_public(group))


@router.get(
    "/{surface_id}/sharpness",
    response_model=SharpnessPublic,
    responses=error_responses(401, 404, 422),
    summary="The stored λmax along training of a surface's checkpoint",
)
def get_sharpness(
    surface_id: SurfaceId, session: SessionDep, settings: SettingsDep
) -> SharpnessPublic:
    """404 until sharpness is stored."""
    group = stored_group_or_404(session, settings, surface_id, GROUP, "sharpness")
    return sharpness_public(group)
