"""``report`` jobs: the stored ``ReportPlan`` → ``landscape.report.reproduce.reproduce``.

The same call ``landscape reproduce skip-vs-plain`` makes; its folder caches every training,
surface and analysis, so a cancelled or crashed report resumes when it is requested again.
"""

from __future__ import annotations

from typing import Any

from api.planning.report import ReportPlan
from api.runners.base import JobContext


def run(plan_json: dict[str, Any], ctx: JobContext) -> None:
    from landscape.report.recipe import ReproduceSpec
    from landscape.report.reproduce import reproduce

    plan = ReportPlan.from_json(plan_json)
    reproduce(
        ReproduceSpec.from_dict(plan.spec),
        plan.out_dir,
        on_progress=lambda _what, done, total: ctx.on_progress(done, total),
        should_stop=ctx.should_stop,
    )
