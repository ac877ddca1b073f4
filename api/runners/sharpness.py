"""``sharpness`` jobs: the stored ``SharpnessPlan`` → ``trajectory_sharpness``, stored as the
surface file's ``sharpness/`` group once every snapshot is measured; on this worker's device,
in its precision as its surfaces (``LANDSCAPE_ENGINE_PRECISION``), except that a bf16 worker
measures in tf32: Lanczos needs products accurate to ~1e-6 (the group records which).
The same numbers ``landscape sharpness --trajectory`` prints."""

from __future__ import annotations

from typing import Any, cast

from api.planning.sharpness import SharpnessPlan, sharpness_precision
from api.runners.base import JobContext


def run(plan_json: dict[str, Any], ctx: JobContext) -> None:
    from landscape import storage
    from landscape.analysis.sharpness import GROUP_NAME, group_contents, trajectory_sharpness
    from landscape.sources.checkpoint import file_digest
    from landscape.specs import LossName, Precision

    plan = SharpnessPlan.from_json(plan_json)
    precision = plan.precision or sharpness_precision(ctx.settings.engine_precision)
    records = trajectory_sharpness(
        plan.snapshots,
        plan.data,
        loss=cast(LossName, plan.loss),
        device=ctx.settings.device,
        precision=cast(Precision, precision),
        on_progress=ctx.on_progress,
        should_stop=ctx.should_stop,
    )
    provenance = {
        "checkpoint": plan.checkpoint.rsplit("/", 1)[-1],
        "checkpoint_sha256": file_digest(plan.checkpoint),
        "loss": plan.loss,
        "data": {"name": plan.data.name, "train_size": plan.data.train_size},
    }
    arrays, attrs = group_contents(records, provenance)
    storage.write_group(plan.surface_path, GROUP_NAME, arrays, attrs)
