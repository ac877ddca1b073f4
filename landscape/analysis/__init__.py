"""Analysis beyond the plotted slice: the Hessian's spectrum, trace, density and curvature maps.

``hessian`` builds Hessian-vector products of the mean loss and runs Lanczos / Hutchinson on
them; ``spectral_density`` estimates the whole eigenvalue density (SLQ); ``curvature`` maps
``|λ_min/λ_max|`` over a surface's plane (Li et al. 2018 §6); ``group`` turns them into the
optional ``hessian/`` group of the surface file; ``analyze`` is the one call (an
``AnalysisSpec`` in, the group stored) that the CLI and the API make;
``surface_metrics`` summarizes a plotted grid (sharpness, roughness, convexity).
"""

from __future__ import annotations

from landscape.analysis.analyze import analysis_steps, analyze
from landscape.analysis.curvature import CurvatureMap, curvature_map
from landscape.analysis.group import (
    GROUP_NAME,
    density_from_group,
    group_contents,
    group_summary,
)
from landscape.analysis.hessian import (
    HessianOperator,
    HessianResult,
    LanczosOptions,
    hessian_spectrum,
    hutchinson_trace,
)
from landscape.specs import MAX_CURVATURE_GRID

__all__ = [
    "GROUP_NAME",
    "MAX_CURVATURE_GRID",
    "CurvatureMap",
    "HessianOperator",
    "HessianResult",
    "LanczosOptions",
    "analysis_steps",
    "analyze",
    "curvature_map",
    "density_from_group",
    "group_contents",
    "group_summary",
    "hessian_spectrum",
    "hutchinson_trace",
]
