"""``surface`` jobs: the stored ``Plan`` → ``train_model`` when needed, then ``compute_surface``
(of a landscape checkpoint, or of an uploaded ONNX graph, converted and checked again).

The same library calls as ``landscape train`` + ``landscape surface``, on this worker's device
with its engine settings (``engine_options``) and the plan's declared precision. Training holds
a file lock per checkpoint, so two jobs needing one model train it once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from api.db import CheckpointRecord
from api.planning.surface import Plan
from api.runners.base import JobContext, engine_options
from landscape.errors import CancelledError

if TYPE_CHECKING:
    from landscape.sources.model_source import ModelSource


def run(plan_json: dict[str, Any], ctx: JobContext) -> None:
    from landscape.surface import Progress, compute_surface

    ctx.settings.ensure_dirs()
    plan = Plan.from_json(plan_json)
    options = engine_options(ctx.settings, plan.precision)  # refused before any training
    if plan.train_spec is not None and _needs_training(plan):
        _train(plan, ctx)

    def on_progress(progress: Progress) -> None:
        if progress.stage == "directions":  # Lanczos steps, not points: no rate for the grid
            ctx.report(stage="directions", done=progress.done, total=progress.total, eta=None)
        elif plan.make_exact:
            ctx.report(stage="exact", done=progress.done, total=progress.total, eta=None)
        elif plan.estimate is not None:  # points at target, in rounds of one stage each
            stage = estimate_stage(plan.surface_path)
            ctx.report(stage=stage, done=progress.done, total=progress.total, eta=None)
        else:
            ctx.on_progress(progress.done, progress.total, progress.eta_s)

    if ctx.should_stop():  # engine set-up (data, compile, processes) takes a while: skip it
        raise CancelledError("stopped before computing the surface")
    ctx.report(stage="computing", eta=None)
    compute_surface(
        plan.surface_spec,
        plan.surface_path,
        options=options,
        on_progress=on_progress,
        should_stop=ctx.should_stop,
        surface_id=plan.surface_id,
        source=_onnx_source(plan, ctx) if plan.checkpoint_path.suffix == ".onnx" else None,
        estimate=plan.estimate,
        make_exact=plan.make_exact,
        refuse_diverged=True,  # a NaN surface fails its job, not "done" and blank
    )


def estimate_stage(path: Path) -> str:
    """``estimate:k/K``, the job's stage while it estimates (``api.job_wire`` spells it out): K
    the looks a point may take (those with an error, then the whole split), k the one the
    least-advanced point still sampling the first split takes next (from the file and its
    journal, so a resumed job counts on from where it stopped)."""
    from landscape.explore.run import pending
    from landscape.explore.stopping import MAX_LOOKS
    from landscape.storage import read_surface

    state = read_surface(path).estimate
    if state is None:
        return "estimate:1/1"
    split, part = next(iter(state.splits.items()))
    looks = part.sums[:, 1]
    total = min(MAX_LOOKS, len(part.stages) - 1) + 1
    waiting = pending(state, make_exact=False)[split]
    k = int(looks[waiting].min()) + 1 if waiting.any() else int(looks.max())
    return f"estimate:{max(1, min(k, total))}/{total}"


def _onnx_source(plan: Plan, ctx: JobContext) -> ModelSource:
    """An uploaded ONNX graph, converted and checked again under this server's limits (the
    check report goes into the surface's provenance as ``onnx``)."""
    from landscape.sources.model_source import checkpoint_source
    from landscape.sources.onnx_limits import OnnxLimits

    limits = OnnxLimits(max_bytes=ctx.settings.max_onnx_bytes)
    return checkpoint_source(plan.surface_spec, onnx_limits=limits)


def _train(plan: Plan, ctx: JobContext) -> None:
    from landscape.train import train_model

    assert plan.train_spec is not None
    spec = dataclasses.replace(plan.train_spec, device=ctx.settings.device)
    total = plan.surface_spec.grid.n_points
    start = {"epoch": 0, "epochs": spec.epochs, "loss": None, "acc": None}
    ctx.report(stage="training", done=0, total=total, eta=None, train=start)
    with _file_lock(plan.checkpoint_path.with_suffix(".lock"), ctx.should_stop):
        if not _needs_training(plan):  # another worker has just trained it
            return

        def on_epoch(record: dict[str, Any]) -> None:
            epochs, epoch = record.get("epochs", 0), record.get("epoch", 0)
            elapsed = float(record.get("elapsed_s", 0.0))
            eta = elapsed / epoch * (epochs - epoch) if epoch else None
            train = {
                "epoch": epoch,
                "epochs": epochs,
                "loss": _finite(record.get("train_loss")),
                "acc": _finite(record.get("train_acc")),
            }
            ctx.report(stage="training", eta=eta, train=train)

        metadata = train_model(
            spec, plan.checkpoint_path, on_epoch=on_epoch, should_stop=ctx.should_stop
        )
        _register_trained(ctx.sessions, plan, metadata)


@contextlib.contextmanager
def _file_lock(path: Path, should_stop: Callable[[], bool]) -> Iterator[None]:
    """One trainer per checkpoint across threads and processes on this host (flock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if should_stop():
                    raise CancelledError("stopped while waiting for another trainer") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _finite(value: Any) -> float | None:
    """A JSON-safe number: a diverged epoch's NaN loss would break the JSON column and wire."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _needs_training(plan: Plan) -> bool:
    """No checkpoint yet, or (PCA directions) a trajectory snapshot is gone: train (again)."""
    if not plan.checkpoint_path.exists():
        return True
    return any(not Path(p).exists() for p in plan.surface_spec.directions.trajectory)


def _register_trained(
    sessions: sessionmaker[Session], plan: Plan, metadata: dict[str, Any]
) -> None:
    """List a trained checkpoint in GET /api/checkpoints so it can be reused by id."""
    details = json.loads(json.dumps(metadata, default=str))  # JSON-safe copy
    with sessions() as session, session.begin():
        if session.get(CheckpointRecord, plan.checkpoint_id) is None:
            session.add(
                CheckpointRecord(
                    id=plan.checkpoint_id,
                    model=plan.model,
                    dataset=plan.dataset,
                    source="trained",
                    filename=f"{plan.model}-{plan.dataset}.pt",
                    details=details,
                )
            )
