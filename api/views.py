"""Library results → the API's wire models: the one place the service's JSON is spelled.

Storage returns typed results (``landscape.storage.Surface``, ``SurfaceInfo``); routes read a
file once and hand it here. NaN and ±inf become ``null`` (JSON has neither).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import numpy as np

from api.db import Job, SurfaceRecord
from api.job_wire import iso, job_public
from api.schemas.common import finite_or_none
from api.schemas.gradient_flow import GradientFlowProfile, GradientFlowPublic
from api.schemas.hessian import (
    ConvergencePublic,
    CurvatureMapPublic,
    DensityPublic,
    HessianBrief,
    HessianPublic,
    PlaneCurvaturePublic,
)
from api.schemas.report import ReportSummary
from api.schemas.surface import (
    EstimateBrief,
    EstimateData,
    EstimateSplitBrief,
    GridPublic,
    ProvenancePublic,
    SurfaceData,
    SurfaceRequest,
    SurfaceSummary,
    TrajectoryPublic,
)
from landscape.storage import Group, Surface, SurfaceEstimate, Trajectory, describe
from landscape.storage.summary import json_safe

HESSIAN_GROUP = "hessian"  # landscape.analysis.GROUP_NAME
GRADIENT_FLOW_GROUP = "gradient_flow"  # landscape.analysis.gradient_flow.GROUP_NAME
SHARPNESS_GROUP = "sharpness"  # landscape.analysis.sharpness.GROUP_NAME
METHOD_TEXT = {
    "fitted": "Each point is estimated from a prefix of one seeded permutation shared by "
    "every point and stratified by class and input-norm quartile (every prefix holds each "
    "stratum in proportion), with the centre's exact per-sample losses as a control variate "
    "(the combined regression estimator over the strata) and a finite-population standard "
    "error; n = N is the full pass.",
    "difference": "Each point is estimated from a prefix of one seeded permutation shared by "
    "every point and stratified by class and input-norm quartile, as the centre's exact loss "
    "plus the stratified mean per-sample difference to it, with a finite-population standard "
    "error; n = N is the full pass.",
}


def surface_summary(record: SurfaceRecord, surface: Surface) -> SurfaceSummary:
    """The DB's display facts joined with the file's status, statistics, provenance and key
    curvature numbers (``hessian``: null until an analysis is stored)."""
    info = describe(surface)
    grid = info.grid
    group = surface.groups.get(HESSIAN_GROUP)
    provenance = ProvenancePublic.model_validate(json_safe(asdict(info.provenance)))
    directions_info = surface.attrs.get("directions_info")
    if provenance.directions.kind == "hessian" and isinstance(directions_info, dict):
        eigenvalues = directions_info.get("eigenvalues") or []
        provenance.directions.eigenvalues = [float(v) for v in eigenvalues]
    return SurfaceSummary(
        id=record.id,
        label=record.label,
        status="complete" if info.status == "complete" else "partial",
        model=record.model,
        dataset=record.dataset,
        ndim=info.ndim,
        grid=GridPublic(
            nx=grid.n_x,
            ny=grid.n_y,
            xrange=list(grid.x_range),
            yrange=list(grid.y_range) if grid.y_range is not None else None,
            nz=grid.n_z,
            zrange=list(grid.z_range) if grid.z_range is not None else None,
        ),
        metrics=list(info.metrics),
        loss=info.spec.loss,
        done=info.done,
        total=info.total,
        nonfinite=info.nonfinite,
        precision=info.precision,
        created=info.created or iso(record.created_at) or "",
        stats={key: finite_or_none(float(value)) for key, value in info.stats.items()},
        provenance=provenance,
        hessian=hessian_brief(group) if group is not None else None,
        gradient_flow=GRADIENT_FLOW_GROUP in surface.groups,
        sharpness=SHARPNESS_GROUP in surface.groups,
        estimate=estimate_brief(surface.estimate) if surface.estimate is not None else None,
    )


def estimate_brief(state: SurfaceEstimate) -> EstimateBrief:
    """An estimated surface's target, method and per-split state (``estimate_summary``, the
    numbers ``landscape info`` prints)."""
    from landscape.storage.estimate import STOPPING_RULE, estimate_summary

    summary = estimate_summary(state)
    spec = state.spec
    exact = state.exact()
    return EstimateBrief(
        target=spec.target,
        kind="relative" if spec.relative else "absolute",
        describe=spec.describe(),
        seed=spec.seed,
        method=spec.method,
        level=spec.level,
        exact=bool(exact.all()),
        points=int(exact.size),
        points_exact=int(exact.sum()),
        points_at_target=int(_at_target(state).sum()),
        method_text=METHOD_TEXT.get(spec.method, spec.method),
        stopping_rule=STOPPING_RULE,
        splits={
            split: EstimateSplitBrief(
                N=summary[split]["N"],
                n_mean=summary[split]["n_mean"],
                points_exact=summary[split]["points_exact"],
                z=summary[split]["z"],
                loss_halfwidth_max=_number(summary[split]["loss_halfwidth_max"]),
                loss_halfwidth_rel_max=_number(summary[split]["loss_halfwidth_rel_max"]),
            )
            for split in state.splits
        },
    )


def _number(value: float | None) -> float | None:
    return None if value is None else finite_or_none(float(value))


def _at_target(state: SurfaceEstimate) -> np.ndarray:
    """Per flat point: every split's loss interval meets the target (or the point is exact)."""
    from landscape.explore.run import pending

    waiting = pending(state, make_exact=False)
    out: np.ndarray = ~np.logical_or.reduce(list(waiting.values()))
    return out


def estimate_data(state: SurfaceEstimate, picks: list[np.ndarray]) -> EstimateData:
    """The brief plus per-point arrays, downsampled by ``picks`` as the values are."""

    def grid(flat: np.ndarray) -> Any:
        return state.grid(flat)[np.ix_(*picks)]

    se = {
        f"{split}_{metric}": _json_array(grid(state.value(split, metric)[1]))
        for split in state.splits
        for metric in ("loss", "acc")
    }
    return EstimateData(
        **estimate_brief(state).model_dump(),
        n={split: grid(part.n()).tolist() for split, part in state.splits.items()},
        se=se,
        exact_points=grid(state.exact()).tolist(),
        at_target=grid(_at_target(state)).tolist(),
    )


def unreadable_summary(record: SurfaceRecord, error: str) -> SurfaceSummary:
    """A surface whose file cannot be read, described from its request alone."""
    request = SurfaceRequest.model_validate(record.request)
    grid = request.grid
    total = grid.points
    metrics = [f"{split}_{m}" for split in request.splits for m in ("loss", "acc")]
    return SurfaceSummary(
        id=record.id,
        label=record.label,
        status="unreadable",
        error=error,
        model=record.model,
        dataset=record.dataset,
        ndim=grid.dim or 2,
        grid=GridPublic(
            nx=grid.nx,
            ny=grid.ny,
            xrange=list(grid.xrange),
            yrange=list(grid.yrange) if grid.yrange is not None else None,
            nz=grid.nz,
            zrange=list(grid.zrange) if grid.zrange is not None else None,
        ),
        metrics=metrics,
        done=0,
        total=total,
        created=iso(record.created_at) or "",
        stats={},
    )


def surface_data(
    record: SurfaceRecord, surface: Surface, max_points: int | None = None
) -> SurfaceData:
    """The summary plus the arrays, each axis downsampled to at most ``max_points``."""
    summary = surface_summary(record, surface)
    ix = _even_indices(len(surface.x), max_points)
    y = z = None
    picks = [ix]  # the arrays' axes, last first: (nz, ny, nx), (ny, nx) or (nx,)
    if surface.y is not None:
        iy = _even_indices(len(surface.y), max_points)
        y, picks = [float(v) for v in surface.y[iy]], [iy, *picks]
    if surface.z is not None:
        iz = _even_indices(len(surface.z), max_points)
        z, picks = [float(v) for v in surface.z[iz]], [iz, *picks]
    values = {m: _json_array(v[np.ix_(*picks)]) for m, v in surface.values.items()}
    group = surface.groups.get(HESSIAN_GROUP)
    return SurfaceData(
        **summary.model_dump(exclude={"hessian", "estimate"}),
        hessian=hessian_public(group) if group is not None else None,
        x=[float(v) if math.isfinite(v) else 0.0 for v in surface.x[ix]],
        y=y,
        z=z,
        values=values,
        trajectory=trajectory_public(surface.trajectory),
        estimate=estimate_data(surface.estimate, picks) if surface.estimate else None,
    )


def _even_indices(n: int, max_points: int | None) -> np.ndarray:
    """``max_points`` indices spread evenly over ``range(n)``, both ends kept."""
    if max_points is None or n <= max_points:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, max_points)).astype(int))


def _json_array(values: np.ndarray) -> list[Any]:
    """Nested lists with NaN/inf as None (JSON has no NaN)."""
    as_object = values.astype(object)
    as_object[~np.isfinite(values)] = None
    return as_object.tolist()  # type: ignore[no-any-return]


def trajectory_public(trajectory: Trajectory | None) -> TrajectoryPublic | None:
    """The stored path as plain lists; never downsampled (a few dozen epochs at most)."""
    if trajectory is None:
        return None
    coords = trajectory.coords
    return TrajectoryPublic(
        x=[float(v) for v in coords[:, 0]],
        y=[float(v) for v in coords[:, 1]] if coords.shape[1] > 1 else None,
        epochs=[int(e) for e in trajectory.epochs],
        explained_variance=list(trajectory.explained_variance_ratio),
    )


def hessian_public(group: Group) -> HessianPublic:
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
        converged=all_converged(summary),
        convergence=spectrum_convergence(summary),
        curvature=CurvatureMapPublic.model_validate(cmap) if cmap else None,
        density=DensityPublic.model_validate(summary["density"]) if "density" in summary else None,
        plane_curvature=PlaneCurvaturePublic.model_validate(summary["plane_curvature"])
        if "plane_curvature" in summary
        else None,
    )


def spectrum_convergence(summary: dict[str, Any]) -> ConvergencePublic | None:
    """The spectrum's residuals against its tolerance; None where the file has none."""
    if "converged" not in summary:
        return None
    top, bottom = summary.get("top_residuals") or [], summary.get("bottom_residuals") or []
    finite = [r for r in (*top, *bottom) if r is not None]
    return ConvergencePublic(
        converged=bool(summary["converged"]),
        residual=max(finite) if finite else None,
        tolerance=summary.get("tolerance"),
        top_residuals=top,
        bottom_residuals=bottom,
    )


def all_converged(summary: dict[str, Any]) -> bool | None:
    """True when the spectrum and every map point converged; None when either is unrecorded."""
    verdicts: list[bool] = []
    if summary.get("top_eigenvalues") or summary.get("bottom_eigenvalues"):
        if "converged" not in summary:
            return None
        verdicts.append(bool(summary["converged"]))
    cmap = summary.get("curvature_map")
    if cmap:
        if "not_converged" not in cmap:
            return None
        verdicts.append(cmap["not_converged"] == 0)
    return all(verdicts) if verdicts else None


def hessian_brief(group: Group) -> HessianBrief:
    """Key numbers for lists."""
    full = hessian_public(group)
    return HessianBrief(**{name: getattr(full, name) for name in HessianBrief.model_fields})


def gradient_flow_public(group: Group) -> GradientFlowPublic:
    """The stored ``gradient_flow/`` group (NaN → null)."""
    from landscape.analysis.gradient_flow import from_group

    arrays, attrs = group
    flows = from_group(arrays, attrs)
    profiles = {
        label: GradientFlowProfile.model_validate(json_safe(flow.to_dict()))
        for label, flow in flows.items()
    }
    data = attrs.get("data") or {}
    return GradientFlowPublic(
        init=profiles.get("init"),
        trained=profiles.get("trained"),
        checkpoint=_str(attrs.get("checkpoint")),
        split=_str(attrs.get("split")),
        train_size=data.get("train_size"),
    )


def report_summary(
    report_id: str, recipe: dict[str, Any], report: dict[str, Any] | None, job: Job | None
) -> ReportSummary:
    """A report folder's state: done once ``report.json`` exists, else pending (its job)."""
    return ReportSummary(
        id=report_id,
        status="done" if report is not None else "pending",
        recipe=json_safe(recipe),
        job=job_public(job) if job is not None else None,
        html=f"/api/reports/{report_id}/html" if report is not None else None,
        wall_time_s=finite_or_none(float(report["wall_time_s"])) if report else None,
    )


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
