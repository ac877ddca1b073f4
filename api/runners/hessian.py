"""``hessian`` jobs: the stored ``HessianPlan`` → ``landscape.analysis.analyze``.

The same call ``landscape hessian --surface`` makes: spectrum, then the map, stored as the
file's ``hessian/`` group in one write (nothing is stored unless every step finished); cancel is
honoured before every Hessian-vector product. It runs on this worker's device, whatever the
API's was.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from api.planning.hessian import HessianPlan
from api.runners.base import JobContext


def run(plan_json: dict[str, Any], ctx: JobContext) -> None:
    from landscape.analysis import analyze

    plan = HessianPlan.from_json(plan_json)
    spec = dataclasses.replace(plan.spec, device=ctx.settings.device)
    analyze(spec, plan.surface_path, on_progress=ctx.on_progress, should_stop=ctx.should_stop)
