"""The estimated FLOPs of a queued job, from the plan its row stores: what the fair queue
(``api/schedule.py``) orders jobs by and turns into seconds.

Each kind prices its stored plan with the formulas of ``api/planning/cost.py`` that its
planner checked the budgets with, so a job is ordered by the same estimate that admitted it.
A kind is one entry in ``JOB_COSTS``; a kind without one (or a plan that cannot be priced any
more, e.g. its checkpoint is gone) has no estimate and is queued as a long job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sqlalchemy.orm import Session

from api.db import CheckpointRecord
from api.planning.cost import (
    Estimate,
    checkpoint_cost,
    data_shape,
    flow_estimate,
    hessian_estimate,
    net_cost,
    report_estimate,
    sharpness_estimate,
    surface_cost,
)

log = logging.getLogger(__name__)

# plan JSON, a session (for records the plan names) → the job's estimate
Pricer = Callable[[dict[str, Any], Session], Estimate]


def _surface(plan_json: dict[str, Any], session: Session) -> Estimate:
    """Training counts only while the checkpoint is missing, as in ``plan_surface``."""
    from api.planning.surface import Plan

    plan = Plan.from_json(plan_json)
    if plan.train_spec is not None:
        model_args: Mapping[str, Any] = dict(plan.train_spec.model_args)
    else:
        record = session.get(CheckpointRecord, plan.checkpoint_id)
        recorded = (record.details or {}).get("model_args") if record is not None else None
        model_args = recorded if isinstance(recorded, dict) else {}
    shape = data_shape(plan.surface_spec.data)
    net = checkpoint_cost(plan.model, model_args, plan.checkpoint_path, shape)
    pending = None if plan.checkpoint_path.exists() else plan.train_spec
    return plan.cost(net, shape, pending)  # an estimate or a make-exact job: their own price


def _report(plan_json: dict[str, Any], _session: Session) -> Estimate:
    from api.planning.report import ReportPlan
    from landscape.report.recipe import ReproduceSpec

    spec = ReproduceSpec.from_dict(ReportPlan.from_json(plan_json).spec)
    shape = data_shape(spec.data)
    nets = {model: net_cost(model, dict(spec.model_args), shape) for model in spec.models}
    return report_estimate(spec, nets, shape)


def _hessian(plan_json: dict[str, Any], _session: Session) -> Estimate:
    from api.planning.hessian import HessianPlan
    from landscape.storage import read_surface

    plan = HessianPlan.from_json(plan_json)
    spec = plan.spec
    map_points = plan.steps - int(spec.spectrum) - int(spec.density_probes > 0)
    shape = data_shape(spec.data)
    net = surface_cost(read_surface(plan.surface_path), Path(spec.checkpoint), shape)
    return hessian_estimate(spec, map_points, net, shape)


def _gradient_flow(plan_json: dict[str, Any], _session: Session) -> Estimate:
    from api.planning.gradient_flow import GradientFlowPlan
    from landscape.storage import read_surface

    plan = GradientFlowPlan.from_json(plan_json)
    shape = data_shape(plan.data)
    net = surface_cost(read_surface(plan.surface_path), Path(plan.checkpoint), shape)
    return flow_estimate(plan.data, net, shape)


def _sharpness(plan_json: dict[str, Any], _session: Session) -> Estimate:
    """One Lanczos run for λmax per snapshot, as ``check_sharpness_budget`` prices it."""
    from api.planning.sharpness import SharpnessPlan
    from landscape.storage import read_surface

    plan = SharpnessPlan.from_json(plan_json)
    shape = data_shape(plan.data)
    net = surface_cost(read_surface(plan.surface_path), Path(plan.checkpoint), shape)
    return sharpness_estimate(plan.data, net, shape, len(plan.snapshots))


JOB_COSTS: Mapping[str, Pricer] = MappingProxyType(
    {
        "surface": _surface,
        "report": _report,
        "hessian": _hessian,
        "gradient_flow": _gradient_flow,
        "sharpness": _sharpness,
    }
)


def job_flops(kind: str, plan_json: dict[str, Any] | None, session: Session) -> float | None:
    """The job's estimated FLOPs, or None when it cannot be priced. Never raises: the job was
    admitted by its planner already, and a missing estimate only queues it as a long one."""
    pricer = JOB_COSTS.get(kind)
    if pricer is None or plan_json is None:
        return None
    try:
        return float(pricer(plan_json, session).time_flops)  # expected work, not the bound
    except Exception:  # an estimate must never refuse or lose a job the planner admitted
        log.warning("could not estimate the cost of a %s job", kind, exc_info=True)
        return None
