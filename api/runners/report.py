"""``report`` jobs: the stored ``ReportPlan`` → ``landscape.report.reproduce.reproduce``.

The same call ``landscape reproduce skip-vs-plain`` makes, on this worker's device with its
engine processes. The job makes the report's folder when it starts; its folder caches every
training, surface and analysis, so a cancelled or crashed report resumes when it is requested
again, and a job that ends before writing anything there removes the folder it made.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from api.planning.report import ReportPlan, discard_if_empty, write_recipe
from api.runners.base import JobContext, worker_device
from landscape.engine.plan import resolve_precision
from landscape.errors import SpecError
from landscape.specs import EngineOptions


def run(plan_json: dict[str, Any], ctx: JobContext) -> None:
    from landscape.report.recipe import ReproduceSpec
    from landscape.report.reproduce import reproduce

    plan = ReportPlan.from_json(plan_json)
    settings = ctx.settings
    device = worker_device(settings)
    # reproduce computes at auto precision, whatever the report id declares: refuse a worker
    # whose device would compute another (fp32 on a CPU for a tf32 report, or the reverse).
    computed = resolve_precision(EngineOptions(), device)
    if plan.precision is not None and computed != plan.precision:
        raise SpecError(
            f"this worker's device is {device.type}, where a report computes in {computed}, "
            f"and the report declares precision {plan.precision!r}. Run it on a worker of the "
            "service's compute device, or give the API and workers "
            f"LANDSCAPE_COMPUTE_DEVICE={device.type} and request it again"
        )
    spec = dataclasses.replace(
        ReproduceSpec.from_dict(plan.spec), device=settings.device, workers=settings.engine_workers
    )
    write_recipe(plan)
    try:
        reproduce(
            spec,
            plan.out_dir,
            on_progress=lambda _what, done, total: ctx.on_progress(done, total),
            should_stop=ctx.should_stop,
        )
    except Exception:  # cancelled, released at shutdown, or failed: the worker records which
        discard_if_empty(plan.out_dir)
        raise
