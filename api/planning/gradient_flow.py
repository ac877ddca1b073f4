"""From a gradient-flow request on a surface to library inputs
(``landscape.analysis.flow_analyze``); the route plans once, the runner executes the stored plan
on the device of the worker running it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from api.db import SurfaceRecord
from api.planning.budget import check_budget
from api.planning.common import analysis_inputs, declared_precision, surface_path
from api.planning.cost import data_shape, flow_estimate, surface_cost
from api.planning.serialize import StoredPlan
from api.schemas.gradient_flow import GradientFlowRequest
from api.settings import Settings
from landscape.specs import DataSpec
from landscape.storage import Group, Surface


@dataclass(frozen=True)
class GradientFlowPlan(StoredPlan):
    surface_id: str
    surface_path: Path
    checkpoint: str
    data: DataSpec
    mode: str
    # declared for the workers' device (never "auto"), so a stored flow of another precision
    # does not answer the request; None in rows planned before: the worker's own precision
    precision: str | None = None


def plan_gradient_flow(
    record: SurfaceRecord, request: GradientFlowRequest, settings: Settings, surface: Surface
) -> GradientFlowPlan:
    """422 over the server's subset cap; 409 (SurfaceFileError) while the surface is not
    complete or its checkpoint is gone."""
    checkpoint, data = analysis_inputs(
        record, surface, settings, analysis="gradient flow", train_size=request.train_size
    )
    return GradientFlowPlan(
        surface_id=record.id,
        surface_path=surface_path(settings, record.id),
        checkpoint=str(checkpoint),
        data=data,
        mode=request.mode,
        precision=declared_precision(settings, settings.engine_precision),
    )


def check_flow_budget(plan: GradientFlowPlan, surface: Surface, settings: Settings) -> None:
    """422 when the gradient flow's estimated cost is over a budget; asked only once the stored
    profiles are known not to answer the request."""
    shape = data_shape(plan.data)
    net = surface_cost(surface, Path(plan.checkpoint), shape)
    check_budget(flow_estimate(plan.data, net, shape), settings)


def flow_covers(group: Group, plan: GradientFlowPlan, surface: Surface) -> bool:
    """True when the stored group is of this checkpoint, data subset, BN mode and precision."""
    _, attrs = group
    data = attrs.get("data") or {}
    flows = attrs.get("flows")
    flows = json.loads(flows) if isinstance(flows, str) else (flows or {})
    modes = {(info.get("settings") or {}).get("mode") for info in flows.values()}
    precisions = {(info.get("settings") or {}).get("precision") for info in flows.values()}
    return (
        attrs.get("checkpoint_sha256") == surface.attrs.get("checkpoint_sha256")
        and data.get("name") == plan.data.name
        and data.get("train_size") == plan.data.train_size
        and modes == {plan.mode}
        and (plan.precision is None or precisions == {plan.precision})
    )
