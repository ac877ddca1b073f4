"""``GET /api/config``: the server's limits and job budgets, ready-made comparisons and form
defaults, so the web page validates and fills its forms from the server instead of restating
them; and the device its workers compute on with the precision surfaces are declared in (part
of their id), and the caller's own allowance in the queue."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from api.demo import CLOSE_GRID, DEMO_EPOCHS, DEMO_GRID, demo_request
from api.deps import CredentialsDep, QueueDep, ReadAccess, SettingsDep
from api.planning.common import compute_device, declared_precision
from api.quota import caller_quota
from api.schemas.surface import GridRequest, TrainRecipe

router = APIRouter(tags=["catalogue"], dependencies=[ReadAccess])

# The demo's pairs (Li et al. 2018, Fig. 5): with and without skip connections. The close
# range is where the plain net's shape shows: over ±1 its loss climbs a million-fold.
PRESETS = (
    (
        "resnet56-close",
        "ResNet-56 vs no shortcuts, close up (±0.25: the plain net's non-convex shoulders; "
        "over ±1 its million-fold climb hides them)",
        ("resnet56", "resnet56-noshort"),
        CLOSE_GRID,
    ),
    (
        "resnet56",
        "ResNet-56 vs ResNet-56 without shortcuts (±1)",
        ("resnet56", "resnet56-noshort"),
        DEMO_GRID,
    ),
    (
        "resnet20",
        "ResNet-20 vs ResNet-20 without shortcuts (±1)",
        ("resnet20", "resnet20-noshort"),
        DEMO_GRID,
    ),
)
_LABELS = {
    "resnet56": "ResNet-56",
    "resnet56-noshort": "ResNet-56, no shortcuts",
    "resnet20": "ResNet-20",
    "resnet20-noshort": "ResNet-20, no shortcuts",
}


_FORM_KEYS = ("dataset", "grid", "directions", "splits")
DEMO_MODELS_FIRST = "resnet20"  # the form's defaults: the demo's ±1 request


def _bound(model: type[Any], field: str, key: str) -> Any:
    return model.model_json_schema()["properties"][field].get(key)


@router.get("/api/config", summary="Limits, presets and form defaults of this server")
def config(
    settings: SettingsDep,
    queue: QueueDep,
    request: Request,
    credentials: CredentialsDep,
    access_token: Annotated[str | None, Query(include_in_schema=False)] = None,
) -> dict[str, Any]:
    presets = [
        {
            "id": key,
            "title": title,
            # The demo's own requests (the label is not part of the cache key), so on a demo
            # server a preset opens the surfaces already computed.
            "requests": [
                {
                    **demo_request(m, grid).model_dump(mode="json", exclude_none=True),
                    "label": _LABELS.get(m, m) + (" ±0.25" if grid is CLOSE_GRID else ""),
                }
                for m in models
            ],
        }
        for key, title, models, grid in PRESETS
    ]
    return {
        "limits": {
            "max_grid_points": settings.max_grid_points,
            "min_grid_points_per_axis": _bound(GridRequest, "nx", "minimum"),
            "min_epochs": _bound(TrainRecipe, "epochs", "minimum"),
            "max_epochs": settings.max_epochs,
            "max_train_size": settings.max_train_size,
            "max_upload_bytes": settings.max_upload_bytes,
            "max_hessian_eigenvalues": settings.max_hessian_eigenvalues,
            "max_trace_samples": settings.max_trace_samples,
            "max_curvature_grid": settings.max_curvature_grid,
            "max_density_probes": settings.max_density_probes,
            "max_lanczos_steps": settings.max_lanczos_steps,
            "max_report_epochs": settings.max_report_epochs,
            "max_report_trainings": settings.max_report_trainings,
            "max_active_jobs": settings.max_active_jobs,
            "max_active_jobs_per_client": settings.max_active_jobs_per_client,
        },
        # Every job's estimated cost is checked against these before it is queued
        # (api/planning/cost.py): FLOPs, peak memory and the largest net's parameters.
        "budgets": {
            "max_job_flops": settings.max_job_flops,
            "max_job_memory_bytes": settings.max_job_memory_bytes,
            "max_model_params": settings.max_model_params,
        },
        # The caller's own allowance in the queue: its token's, or its address's.
        "quota": caller_quota(
            settings,
            queue,
            credentials.credentials if credentials is not None else access_token,
            request.client.host if request.client else "unknown",
            request.headers.getlist("x-forwarded-for"),
        ),
        "compute": {
            "device": compute_device(settings).type,
            "precision": declared_precision(settings, settings.engine_precision),
        },
        "presets": presets,
        # The request form starts from the demo's recipe, grid and directions.
        "defaults": {
            "epochs": DEMO_EPOCHS,
            **{
                k: v
                for k, v in demo_request(DEMO_MODELS_FIRST)
                .model_dump(mode="json", exclude_none=True)
                .items()
                if k in _FORM_KEYS
            },
        },
    }
