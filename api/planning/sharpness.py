"""From a sharpness request on a surface to library inputs
(``landscape.analysis.sharpness.trajectory_sharpness``): the checkpoint's snapshots, the data
and the budget; the runner executes the stored plan on its worker's device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from api.db import SurfaceRecord
from api.planning.budget import check_budget
from api.planning.common import analysis_inputs, declared_precision, surface_path
from api.planning.cost import data_shape, sharpness_estimate, surface_cost
from api.planning.serialize import StoredPlan
from api.schemas.sharpness import SharpnessRequest
from api.settings import Settings
from landscape.specs import DataSpec
from landscape.storage import Group, Surface
from landscape.train import snapshot_dir

MAX_SNAPSHOTS = 200  # λmax points per job (each a Lanczos run), spread evenly over the run


@dataclass(frozen=True)
class SharpnessPlan(StoredPlan):
    surface_id: str
    surface_path: Path
    checkpoint: str
    snapshots: tuple[str, ...]
    data: DataSpec
    loss: str
    # what the Lanczos products run in, declared for the workers' device: the engine's
    # precision, except bf16 measures in tf32 (λmax needs products accurate to ~1e-6); None
    # in rows planned before: the worker's own
    precision: str | None = None


def plan_sharpness(
    record: SurfaceRecord, request: SharpnessRequest, settings: Settings, surface: Surface
) -> SharpnessPlan:
    """The snapshots next to the surface's checkpoint (or the checkpoint itself); 409 while
    the surface is not complete, 422 over the subset cap or for a loss of the weights."""
    from landscape.specs import LossName, check_choice

    checkpoint, data = analysis_inputs(
        record, surface, settings, analysis="sharpness", train_size=request.train_size
    )
    check_choice("loss of sharpness", surface.spec.loss, LossName)
    from landscape.analysis.sharpness import sample_snapshots

    kept = list(snapshot_dir(checkpoint).glob("epoch_*.pt"))
    snapshots = sample_snapshots(kept, MAX_SNAPSHOTS)  # spread over the run, first and last
    return SharpnessPlan(
        surface_id=record.id,
        surface_path=surface_path(settings, record.id),
        checkpoint=str(checkpoint),
        snapshots=tuple(str(p) for p in snapshots) or (str(checkpoint),),
        data=data,
        loss=surface.spec.loss,
        precision=sharpness_precision(declared_precision(settings, settings.engine_precision)),
    )


def sharpness_precision(engine_precision: str) -> str:
    """λmax in the engine's precision, but never bf16: Lanczos needs products accurate to
    ~1e-6, so a bf16 deployment measures in tf32."""
    return "tf32" if engine_precision == "bf16" else engine_precision


def check_sharpness_budget(plan: SharpnessPlan, surface: Surface, settings: Settings) -> None:
    """422 when the Lanczos runs' estimated cost is over a budget."""
    shape = data_shape(plan.data)
    net = surface_cost(surface, Path(plan.checkpoint), shape)
    check_budget(sharpness_estimate(plan.data, net, shape, len(plan.snapshots)), settings)


def sharpness_covers(group: Group, plan: SharpnessPlan, surface: Surface) -> bool:
    """True when the stored group is of this checkpoint, subset, snapshots and precision."""
    _, attrs = group
    data = attrs.get("data") or {}
    return (
        attrs.get("checkpoint_sha256") == surface.attrs.get("checkpoint_sha256")
        and data.get("train_size") == plan.data.train_size
        and list(attrs.get("snapshots") or []) == [Path(p).name for p in plan.snapshots]
        and (plan.precision is None or attrs.get("precision") == plan.precision)
    )
