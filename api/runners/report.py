"""``report`` jobs: the stored ``ReportPlan`` → ``landscape.report.reproduce.reproduce``.

The same call ``landscape reproduce skip-vs-plain`` makes, on this worker's device with its
engine settings (``engine_options``: processes, GPUs, compile, backend, Ray address, as for a
surface) and the recipe's precision, which a worker that cannot compute it (tf32 on a CPU)
refuses before any work. The job makes the report's folder when it starts; its folder caches
every training, surface and analysis, so a cancelled or crashed report resumes when it is
requested again, and a job that ends before writing anything there removes the folder it made.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from api.planning.report import ReportPlan, discard_if_empty, write_recipe
from api.runners.base import JobContext, engine_options


def run(plan_json: dict[str, Any], ctx: JobContext) -> None:
    from landscape.report.recipe import ReproduceSpec
    from landscape.report.reproduce import reproduce

    plan = ReportPlan.from_json(plan_json)
    recipe = dict(plan.spec)
    # rows planned before precision was a recipe value: the precision they declared, or,
    # older still, none (they computed the engine's auto)
    recipe.setdefault("precision", plan.precision or "auto")
    options = engine_options(ctx.settings, recipe["precision"])
    spec = dataclasses.replace(
        ReproduceSpec.from_dict(recipe), device=options.device, workers=options.workers
    )
    write_recipe(plan)
    try:
        reproduce(
            spec,
            plan.out_dir,
            options=options,
            on_progress=lambda _what, done, total: ctx.on_progress(done, total),
            should_stop=ctx.should_stop,
        )
    except Exception:  # cancelled, released at shutdown, or failed: the worker records which
        discard_if_empty(plan.out_dir)
        raise
