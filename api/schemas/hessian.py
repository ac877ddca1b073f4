"""Wire models of the Hessian analysis (``/api/surfaces/{id}/hessian``): the request, and the
stored analysis as clients read it (``HessianPublic``, with its curvature map and eigenvalue
density), which the surface views embed. Limits that depend on settings are checked in
``api/planning/hessian.py``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.schemas.common import MAX_SUBSET, JobPublic, Strict
from landscape.specs import MAX_CURVATURE_GRID, MAX_DENSITY_PROBES, MAX_LANCZOS_STEPS


class HessianRequest(Strict):
    """A Hessian analysis of a complete surface's checkpoint (docs/format.md, "Curvature"):
    extreme eigenvalues (Lanczos), the trace (Hutchinson 1989), the eigenvalue density
    (stochastic Lanczos quadrature, Ghorbani et al. 2019) and the ``|λ_min/λ_max|`` map of
    Li et al. 2018 §6 on a ``curvature_grid``² subset of the surface's grid points."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"top": 3, "bottom": 1, "trace": True}]},
    )

    top: int = Field(3, ge=0, le=100, description="largest eigenvalues (server-capped)")
    bottom: int = Field(1, ge=0, le=100, description="smallest eigenvalues (server-capped)")
    trace: bool = Field(False, description="estimate tr(H) with Hutchinson probes")
    trace_samples: int = Field(20, ge=1, le=100000, description="Hutchinson probes")
    density_probes: int = Field(
        0, ge=0, le=MAX_DENSITY_PROBES, description="SLQ density probes (server-capped); 0: none"
    )
    density_steps: int = Field(
        40, ge=2, le=MAX_LANCZOS_STEPS, description="Lanczos steps (nodes) per density probe"
    )
    curvature_grid: int = Field(
        0, ge=0, le=MAX_CURVATURE_GRID, description="map points per axis; 0: no map"
    )
    curvature_steps: int | None = Field(
        None,
        ge=2,
        le=MAX_LANCZOS_STEPS,
        description="fixed Lanczos steps per map point, with residual norms; null: ARPACK",
    )
    train_size: int | None = Field(
        None,
        ge=1,
        le=MAX_SUBSET,
        description="training subset the Hessian is of; default: the surface's",
    )

    @model_validator(mode="after")
    def _something_to_compute(self) -> HessianRequest:
        wanted = self.top + self.bottom + self.density_probes + self.curvature_grid
        if wanted == 0 and not self.trace:
            raise ValueError(
                "nothing to compute: ask for 'top', 'bottom', 'trace', 'density_probes' or "
                "'curvature_grid'"
            )
        if self.curvature_steps is not None and not self.curvature_grid:
            raise ValueError("'curvature_steps' sets the map's Lanczos: ask for 'curvature_grid'")
        return self


class CurvatureMapPublic(BaseModel):
    """``|λ_min/λ_max|`` on a sub-grid: ``[j][i]`` at ``(x[i], y[j])``; 1D: flat lists."""

    x: list[float]
    y: list[float] | None
    ratio: list[Any] = Field(description="null where λ_max = 0")
    lambda_max: list[Any]
    lambda_min: list[Any]
    ratio_median: float | None
    ratio_max: float | None
    steps: int | None = Field(None, description="fixed Lanczos steps per point; null: ARPACK")
    residual_max: list[Any] | None = Field(None, description="‖Hy − θy‖ of λ_max (fixed steps)")
    residual_min: list[Any] | None = Field(None, description="‖Hy − θy‖ of λ_min (fixed steps)")
    tol: float | None = Field(
        None, description="relative: a point converged when both residuals <= tol × its |λ|"
    )
    converged: list[Any] | None = Field(None, description="per point; null: not recorded")
    not_converged: int | None = Field(None, description="points not converged; null: unknown")


class DensityPublic(BaseModel):
    """The Hessian's eigenvalue density by stochastic Lanczos quadrature: ``density[k]`` at
    ``grid[k]`` (Gaussian-smoothed nodes); per probe, ``nodes`` (Ritz values, null past an
    exhausted Krylov space) and their ``weights``."""

    probes: int
    steps: int = Field(description="Lanczos steps asked per probe")
    seed: int
    probe: str = Field(description="rademacher or gaussian")
    sigma: float = Field(description="the smoothing kernel's standard deviation")
    matvecs: int
    wall_time_s: float
    node_min: float | None
    node_max: float | None
    mean: float | None = Field(description="estimate of tr(H) / n_params")
    negative_fraction: float | None = Field(
        description="share of eigenvalues certainly below -negative_epsilon (the lower moment "
        "bound, mean over probes); null in files that predate it"
    )
    negative_fraction_max: float | None = Field(
        None, description="the upper moment bound: adds the mass the moments cannot place"
    )
    negative_stderr: float | None = Field(
        None, description="standard error of negative_fraction over probes; null for one"
    )
    negative_interval: list[float] | None = Field(
        None, description="[fraction - 2 stderr, fraction_max + 2 stderr], clipped to [0, 1]"
    )
    negative_epsilon: float | None = Field(
        None, description="eigenvalues within this of 0 count as 0: 1e-5 × the largest |node|"
    )
    grid: list[float | None]
    density: list[float | None]
    nodes: list[list[float | None]]
    weights: list[list[float | None]]


class ConvergencePublic(BaseModel):
    """Whether the spectrum's Lanczos converged, so a reader can tell a number from a guess:
    each eigenvalue's residual ``‖Hv − θv‖`` against an absolute ``tolerance`` (the relative
    tol × the largest ``|θ|``)."""

    converged: bool
    residual: float | None = Field(description="the largest residual of the eigenvalues")
    tolerance: float | None = Field(description="the residual an eigenvalue may have")
    top_residuals: list[float | None]
    bottom_residuals: list[float | None]


class PlaneCurvaturePublic(BaseModel):
    """The plotted plane's curvature at the centre per axis, two ways, beside the Hessian's
    mean and extremes (docs/format.md, "plane curvature"); ``sentence`` is the CLI's words."""

    axes: list[str] = Field(description="the plotted axes, x first")
    hessian: list[float | None] = Field(description="δᵀHδ/‖δ‖² per axis (one product each)")
    finite_difference: list[float | None] = Field(
        description="the surface's second difference through its centre / ‖δ‖²; null without "
        "a centre point"
    )
    step: list[float | None] = Field(description="grid step h of each difference (coordinate)")
    norm: list[float | None] = Field(description="‖δ‖ over every parameter")
    norm_params: list[float | None] = Field(description="‖δ‖ over the Hessian's parameters")
    metric: str | None = Field(description="the surface dataset differenced")
    directions: str | None = Field(description="the surface's direction kind")
    mean_curvature: float | None = Field(description="tr(H)/n; null without a trace")
    lambda_min: float | None
    lambda_max: float | None
    sentence: str = Field(description="what the plane can and cannot show, in one sentence")


class HessianBrief(BaseModel):
    """The headline curvature numbers (lists, gallery cards); null where not computed."""

    lambda_max: float | None = Field(description="largest Hessian eigenvalue")
    lambda_min: float | None = Field(description="smallest Hessian eigenvalue")
    ratio: float | None = Field(description="|λ_min/λ_max| (Li et al. 2018 §6)")
    trace: float | None = Field(description="Hutchinson estimate of tr(H)")
    curvature_map: bool = Field(description="whether a curvature map is stored")
    converged: bool | None = Field(
        None,
        description="every Lanczos result converged (spectrum and map points); null: the file "
        "predates convergence records",
    )


class HessianPublic(HessianBrief):
    """The stored ``hessian/`` group of a surface, JSON-ready (NaN → null)."""

    top_eigenvalues: list[float | None] = Field(description="largest first")
    bottom_eigenvalues: list[float | None] = Field(description="smallest first")
    trace_stderr: float | None
    trace_samples: int | None = Field(description="Hutchinson probes; null without a trace")
    split: str | None
    loss: str | None
    train_size: int | None = Field(description="training subset; null: the whole split")
    n_params: int | None
    n_samples: int | None
    matvecs: int | None = Field(description="Hessian-vector products for the spectrum")
    wall_time_s: float | None
    curvature_matvecs: int | None
    curvature_wall_time_s: float | None
    created: str | None
    convergence: ConvergencePublic | None = Field(
        None, description="the spectrum's; null without eigenvalues or in older files"
    )
    curvature: CurvatureMapPublic | None = Field(description="null without a map")
    density: DensityPublic | None = Field(None, description="null without a density")
    plane_curvature: PlaneCurvaturePublic | None = Field(
        None, description="the plotted axes' curvature against tr(H)/n; null in older files"
    )


class HessianCreated(BaseModel):
    """202: ``job`` queued (or shared), ``hessian`` null; 200: ``hessian`` already stored."""

    job: JobPublic | None
    hessian: HessianPublic | None
