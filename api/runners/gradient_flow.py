"""``gradient_flow`` jobs: the stored ``GradientFlowPlan`` → ``analyze_gradient_flow``.

The same call ``landscape gradient-flow --surface`` makes: the flow at initialization, then
trained, stored as the file's ``gradient_flow/`` group once both finished; on this worker's
device, in the precision its plan declared as surfaces do (``LANDSCAPE_ENGINE_PRECISION``,
``auto``: tf32 on CUDA).
"""

from __future__ import annotations

from typing import Any

from api.planning.gradient_flow import GradientFlowPlan
from api.runners.base import JobContext


def run(plan_json: dict[str, Any], ctx: JobContext) -> None:
    from landscape.analysis.flow_analyze import analyze_gradient_flow

    plan = GradientFlowPlan.from_json(plan_json)
    analyze_gradient_flow(
        plan.checkpoint,
        plan.data,
        plan.surface_path,
        mode=plan.mode,  # type: ignore[arg-type]
        device=ctx.settings.device,
        precision=plan.precision or ctx.settings.engine_precision,  # type: ignore[arg-type]
        on_progress=ctx.on_progress,
        should_stop=ctx.should_stop,
    )
