"""Hessian analyses of finished surfaces: plan, cache check, wire view and the job runner.

``POST /api/surfaces/{id}/hessian`` and the worker call the same ``plan_hessian``, so both agree
on the checkpoint, data and curvature sub-grid. The runner makes the library calls that
``landscape hessian --surface`` makes (landscape/cli/hessian_cmd.py) and stores the result as the
file's ``hessian/`` group (docs/format.md, "Curvature"): one run writes the group whole, so a
different analysis of the same surface replaces the stored one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from api.db import SurfaceRecord
from api.planning import check_dataset, checkpoint_path, surface_path
from api.schemas import CurvatureMapPublic, HessianBrief, HessianPublic, HessianRequest
from api.settings import Settings
from landscape.errors import CancelledError, CheckpointError, SpecError, SurfaceFileError
from landscape.specs import DataSpec
from landscape.store import Surface, read_group, read_surface

if TYPE_CHECKING:
    from api.worker import JobContext

KIND = "hessian"
GROUP = "hessian"  # landscape.analysis.GROUP_NAME, without importing torch at API start-up
SPLIT: Literal["train"] = "train"  # the Hessian of the plotted training loss, as the CLI's default
BATCH_SIZE = 256  # the CLI's default: products are exact sums, the batch only sets memory


@dataclass(frozen=True)
class HessianPlan:
    """One analysis of one surface, resolved: what the worker computes and the cache compares."""

    surface_id: str
    surface_path: Path
    checkpoint_path: Path
    checkpoint_sha256: str
    data: DataSpec
    loss: str
    request: HessianRequest
    # Coordinates of the curvature map: the surface grid points curvature_map will use.
    curvature_x: np.ndarray | None
    curvature_y: np.ndarray | None

    @property
    def spectrum(self) -> bool:
        return bool(self.request.top or self.request.bottom or self.request.trace)

    @property
    def map_points(self) -> int:
        if self.curvature_x is None:
            return 0
        return len(self.curvature_x) * (1 if self.curvature_y is None else len(self.curvature_y))

    @property
    def steps(self) -> int:
        """Job progress units: the spectrum (Lanczos and trace) is one, each map point one."""
        return int(self.spectrum) + self.map_points


def check_limits(request: HessianRequest, settings: Settings) -> None:
    """This server's caps (422 through SpecError), with the limit in the message."""
    cap = settings.max_hessian_eigenvalues
    for name in ("top", "bottom"):
        if getattr(request, name) > cap:
            raise SpecError(
                f"{name} = {getattr(request, name)} is more than this server's limit of {cap} "
                f"eigenvalues (each costs Lanczos iterations)"
            )
    if request.trace and request.trace_samples > settings.max_trace_samples:
        raise SpecError(
            f"trace_samples = {request.trace_samples} is more than this server's limit of "
            f"{settings.max_trace_samples}"
        )
    if request.curvature_grid > settings.max_curvature_grid:
        raise SpecError(
            f"curvature_grid = {request.curvature_grid} is more than this server's limit of "
            f"{settings.max_curvature_grid} points per axis (one Lanczos run per point)"
        )
    size_cap = settings.max_train_size
    if size_cap is not None and request.train_size is not None and request.train_size > size_cap:
        raise SpecError(f"train_size must be at most {size_cap} on this server")


def plan_hessian(
    record: SurfaceRecord, request: HessianRequest, settings: Settings
) -> tuple[HessianPlan, Surface]:
    """Resolve an analysis of a surface the service holds; 422 for limits, 409 (SurfaceFileError)
    while the surface is not complete or its checkpoint is gone."""
    check_limits(request, settings)
    path = surface_path(settings, record.id)
    if not path.exists():
        raise SurfaceFileError(
            f"surface {record.id!r} has no points yet; wait for its job to finish"
        )
    surface = read_surface(path)
    if surface.status != "complete":
        raise SurfaceFileError(
            f"surface {record.id!r} is {surface.status} ({surface.done} of {surface.total} "
            f"points); the Hessian analysis needs a complete surface: wait for its job"
        )
    checkpoint = checkpoint_path(settings, record.checkpoint_id)
    if not checkpoint.exists():
        raise SurfaceFileError(
            f"the checkpoint of surface {record.id!r} is no longer on this server"
        )
    base = surface.spec.data
    resolved = check_dataset(base.name, settings)  # today's data folder, not the file's
    data = DataSpec(
        name=base.name,
        data_root=resolved.data_root,
        train_size=request.train_size or base.train_size,
        test_size=base.test_size,
        download=resolved.download,
    )
    curvature_x = curvature_y = None
    if request.curvature_grid:
        from landscape.analysis.curvature import coarse_indices

        n = request.curvature_grid
        curvature_x = surface.x[coarse_indices(len(surface.x), n)]
        if surface.y is not None:
            curvature_y = surface.y[coarse_indices(len(surface.y), n)]
    plan = HessianPlan(
        surface_id=record.id,
        surface_path=path,
        checkpoint_path=checkpoint,
        checkpoint_sha256=str(surface.attrs.get("checkpoint_sha256", "")),
        data=data,
        loss=surface.spec.loss,
        request=request,
        curvature_x=curvature_x,
        curvature_y=curvature_y,
    )
    return plan, surface


def stored_group(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    return read_group(path, GROUP)


def covers(group: tuple[dict[str, np.ndarray], dict[str, Any]], plan: HessianPlan) -> bool:
    """True when the stored group already holds every number the plan asks for, computed from
    the same checkpoint, split, loss and data subset (parts not asked for may be there too:
    a stored map is not a reason to recompute the eigenvalues, nor the other way round)."""
    arrays, attrs = group
    data = attrs.get("data") or {}
    same_inputs = (
        attrs.get("checkpoint_sha256") == plan.checkpoint_sha256
        and attrs.get("split") == SPLIT
        and attrs.get("loss") == plan.loss
        and data.get("name") == plan.data.name
        and data.get("train_size") == plan.data.train_size
    )
    if not same_inputs:
        return False
    request = plan.request
    for name, wanted in (("top_eigenvalues", request.top), ("bottom_eigenvalues", request.bottom)):
        if wanted and len(arrays.get(name, ())) != wanted:
            return False
    if request.trace:
        samples = (attrs.get("settings") or {}).get("trace_samples")
        if "trace" not in attrs or samples != request.trace_samples:
            return False
    if plan.curvature_x is not None:
        if not _same(arrays.get("curvature_x"), plan.curvature_x):
            return False
        if plan.curvature_y is not None and not _same(arrays.get("curvature_y"), plan.curvature_y):
            return False
    return True


def _same(stored: np.ndarray | None, wanted: np.ndarray) -> bool:
    return stored is not None and stored.shape == wanted.shape and np.allclose(stored, wanted)


# --------------------------------------------------------------------------- wire view


def hessian_public(group: tuple[dict[str, np.ndarray], dict[str, Any]]) -> HessianPublic:
    """The group as JSON numbers; the summary logic (ratio, map statistics) is the library's
    ``group_summary``, so the CLI, ``landscape info`` and the API report the same numbers."""
    from landscape.analysis.group import group_summary

    summary = group_summary(*group)
    top, bottom = summary["top_eigenvalues"], summary["bottom_eigenvalues"]
    settings = summary.get("settings") or {}
    cmap = summary.get("curvature_map")
    return HessianPublic(
        lambda_max=top[0] if top else None,
        lambda_min=bottom[0] if bottom else None,
        ratio=summary.get("ratio"),
        trace=summary.get("trace"),
        curvature_map=cmap is not None,
        top_eigenvalues=top,
        bottom_eigenvalues=bottom,
        trace_stderr=summary.get("trace_stderr"),
        trace_samples=settings.get("trace_samples") if "trace" in summary else None,
        split=summary.get("split"),
        loss=summary.get("loss"),
        train_size=(summary.get("data") or {}).get("train_size"),
        n_params=summary.get("n_params"),
        n_samples=summary.get("n_samples"),
        matvecs=summary.get("matvecs"),
        wall_time_s=summary.get("wall_time_s"),
        curvature_matvecs=summary.get("curvature_matvecs"),
        curvature_wall_time_s=summary.get("curvature_wall_time_s"),
        created=summary.get("created"),
        curvature=CurvatureMapPublic(
            x=cmap["x"],
            y=cmap["y"],
            ratio=cmap["ratio"],
            lambda_max=cmap["lambda_max"],
            lambda_min=cmap["lambda_min"],
            ratio_median=cmap["ratio_median"],
            ratio_max=cmap["ratio_max"],
        )
        if cmap
        else None,
    )


def hessian_brief(path: Path) -> HessianBrief | None:
    """Key numbers for lists (one small group read per surface)."""
    group = stored_group(path)
    if group is None:
        return None
    full = hessian_public(group)
    return HessianBrief(**{name: getattr(full, name) for name in HessianBrief.model_fields})


# --------------------------------------------------------------------------- the job runner


def run_hessian_job(request: dict[str, Any], ctx: JobContext) -> None:
    """The worker's runner for ``kind="hessian"`` jobs: the same library calls as
    ``landscape hessian --surface`` (spectrum, then the map), stored in one ``write_group``.
    Cancel is honoured between steps: after the spectrum and after every map point (one
    Lanczos run cannot be interrupted); nothing is stored unless every step finished."""
    import torch

    from landscape.analysis import (
        LanczosOptions,
        curvature_map,
        group_contents,
        hessian_spectrum,
    )
    from landscape.checkpoint import file_digest, load_checkpoint
    from landscape.data import load_data
    from landscape.specs import to_dict
    from landscape.store import read_directions, write_group

    body = dict(request)
    surface_id = str(body.pop("surface_id"))
    with ctx.sessions() as session:
        record = session.get(SurfaceRecord, surface_id)
    if record is None:
        raise SurfaceFileError(f"surface {surface_id!r} was deleted before its analysis ran")
    plan, surface = plan_hessian(record, HessianRequest.model_validate(body), ctx.settings)
    checkpoint = str(plan.checkpoint_path)
    if file_digest(checkpoint) != plan.checkpoint_sha256:
        raise CheckpointError(
            f"checkpoint {plan.checkpoint_path.name} is not the one surface {surface_id} was "
            f"computed from (sha256 {plan.checkpoint_sha256[:12]}…)"
        )
    total, start = plan.steps, time.monotonic()

    def report(done: int) -> None:
        elapsed = time.monotonic() - start
        eta = elapsed / done * (total - done) if done else None
        ctx.report(stage="computing", done=done, total=total, eta=eta)

    report(0)
    model, _ = load_checkpoint(checkpoint)
    data = load_data(plan.data, SPLIT)
    common: dict[str, Any] = {
        "loss": plan.loss,
        "device": ctx.settings.device,
        "dtype": torch.float32,
        "batch_size": BATCH_SIZE,
        "options": LanczosOptions(),
    }
    req = plan.request
    result = None
    if plan.spectrum:
        trace_samples = req.trace_samples if req.trace else 0
        result = hessian_spectrum(
            model, data, top=req.top, bottom=req.bottom, trace_samples=trace_samples, **common
        )
        report(1)
    curvature = None
    if req.curvature_grid:
        offset = int(plan.spectrum)

        def on_progress(done: int, points: int) -> None:
            report(offset + done)
            if done < points and ctx.should_stop():
                raise CancelledError(f"stopped after {done} of {points} curvature points")

        if ctx.should_stop():
            raise CancelledError("stopped before the curvature map")
        curvature = curvature_map(
            model,
            data,
            read_directions(plan.surface_path),
            surface.x,
            surface.y,
            n=req.curvature_grid,
            on_progress=on_progress,
            **common,
        )
    provenance = {
        "checkpoint": checkpoint,
        "checkpoint_sha256": plan.checkpoint_sha256,
        "split": SPLIT,
        "loss": plan.loss,
        "data": to_dict(plan.data),
    }
    arrays, attrs = group_contents(result, curvature, provenance)
    write_group(plan.surface_path, GROUP, arrays, attrs)
