"""``sharpness`` jobs: the stored ``SharpnessPlan`` → ``trajectory_sharpness``, stored as the
surface file's ``sharpness/`` group once every snapshot is measured; on this worker's device,
in its precision as its surfaces (``LANDSCAPE_ENGINE_PRECISION``), except that a bf16 worker
measures in tf32: Lanczos needs products accurate to ~1e-6 (the group records which).
The same numbers ``landscape sharpness --trajectory`` prints. Where the training kept more
snapshots than a job measures, the plan spread its points over the run; the group records how
many there were (``snapshots_kept``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from api.planning.sharpness import SharpnessPlan, sharpness_precision
from api.runners.base import JobContext


def run(plan_json: dict[str, Any], ctx: JobContext) -> None:
    from landscape import storage
    from landscape.analysis.sharpness import GROUP_NAME, group_contents, trajectory_sharpness
    from landscape.sources.checkpoint import file_digest
    from landscape.specs import LossName, Precision
    from landscape.train import snapshot_dir

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
    kept = len(list(snapshot_dir(Path(plan.checkpoint)).glob("epoch_*.pt")))
    provenance = {
        "snapshots_kept": kept,  # more than the points: they were spread over the run
        "checkpoint": plan.checkpoint.rsplit("/", 1)[-1],
        "checkpoint_sha256": file_digest(plan.checkpoint),
        "loss": plan.loss,
        "data": {"name": plan.data.name, "train_size": plan.data.train_size},
    }
    arrays, attrs = group_contents(records, provenance)
    storage.write_group(plan.surface_path, GROUP_NAME, arrays, attrs)
