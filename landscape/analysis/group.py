"""Hessian results ↔ the optional ``hessian/`` group of a surface file (docs/format.md).

One ``landscape hessian`` run writes the group whole (a rerun replaces it), so its numbers
always come from one checkpoint, one data split and one set of settings, recorded beside them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import numpy as np

from landscape.analysis.curvature import CurvatureMap
from landscape.analysis.data_spread import DataSpread, spread_arrays, spread_from_group
from landscape.analysis.hessian import HessianResult
from landscape.analysis.plane_curvature import PlaneCurvature, plane_arrays, plane_summary
from landscape.analysis.spectral_density import SpectralDensity
from landscape.errors import SurfaceFileError

GROUP_NAME = "hessian"
ENCODING_TYPE = "hessian-spectrum"
ENCODING_VERSION = "1"  # the density and curvature residuals are additions old readers skip


def group_contents(
    result: HessianResult | None,
    curvature: CurvatureMap | None = None,
    attrs: Mapping[str, Any] | None = None,
    *,
    density: SpectralDensity | None = None,
    spread: DataSpread | None = None,
    plane: PlaneCurvature | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and attrs of the ``hessian/`` group; ``attrs`` adds provenance (checkpoint sha,
    split, data spec) that the computation itself does not know."""
    arrays: dict[str, np.ndarray] = {}
    out: dict[str, Any] = {
        "encoding-type": ENCODING_TYPE,
        "encoding-version": ENCODING_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(attrs or {}),
    }
    if result is not None:
        arrays["top_eigenvalues"] = np.asarray(result.top, dtype=np.float64)
        arrays["bottom_eigenvalues"] = np.asarray(result.bottom, dtype=np.float64)
        arrays["top_residuals"] = np.asarray(result.top_residuals, dtype=np.float64)
        arrays["bottom_residuals"] = np.asarray(result.bottom_residuals, dtype=np.float64)
        out.update(
            tolerance=result.tolerance,
            converged=result.converged,
            n_params=result.n_params,
            n_samples=result.n_samples,
            matvecs=result.matvecs,
            wall_time_s=result.wall_time_s,
            settings=dict(result.settings),
        )
        if result.trace is not None:
            out["trace"] = result.trace
            out["trace_stderr"] = result.trace_stderr
    if curvature is not None:
        arrays["curvature_x"] = curvature.x
        if curvature.y is not None:
            arrays["curvature_y"] = curvature.y
        arrays["lambda_max"] = curvature.lambda_max
        arrays["lambda_min"] = curvature.lambda_min
        arrays["curvature_ratio"] = curvature.ratio
        out["curvature_matvecs"] = curvature.matvecs
        out["curvature_wall_time_s"] = curvature.wall_time_s
        arrays["curvature_residual_max"] = curvature.residual_max
        arrays["curvature_residual_min"] = curvature.residual_min
        arrays["curvature_converged"] = curvature.converged
        out["curvature_tol"] = curvature.tol
        if curvature.steps is not None:
            out["curvature_steps"] = curvature.steps
    if density is not None:
        arrays["density_nodes"] = density.nodes
        arrays["density_weights"] = density.weights
        arrays["density_grid"] = density.grid
        arrays["density"] = density.density
        if density.epsilon is not None:
            arrays["density_negative"] = density.negative
            out["density_negative_epsilon"] = density.epsilon
        out.update(
            density_probes=len(density.nodes),
            density_steps=density.settings.get("steps", density.steps),
            density_seed=density.seed,
            density_probe=density.probe,
            density_sigma=density.sigma,
            density_n=density.n,
            density_matvecs=density.matvecs,
            density_wall_time_s=density.wall_time_s,
        )
    if spread is not None:
        spread_data, spread_attrs = spread_arrays(spread)
        arrays.update(spread_data)
        out.update(spread_attrs)
    if plane is not None:
        plane_data, plane_attrs = plane_arrays(plane)
        arrays.update(plane_data)
        out.update(plane_attrs)
    return arrays, out


def density_from_group(
    arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any]
) -> SpectralDensity | None:
    """The stored SLQ density (None when the group has none), with its own ``cdf``/``moment``."""
    if "density" not in arrays:
        return None
    try:
        return _density(arrays, attrs)
    except KeyError as exc:
        raise SurfaceFileError(f"hessian/ group has a density but no {exc.args[0]!r}") from exc


def _density(arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any]) -> SpectralDensity:
    nodes = np.asarray(arrays["density_nodes"], dtype=np.float64)
    return SpectralDensity(
        nodes=nodes,
        weights=np.asarray(arrays["density_weights"], dtype=np.float64),
        grid=np.asarray(arrays["density_grid"], dtype=np.float64),
        density=np.asarray(arrays["density"], dtype=np.float64),
        sigma=float(attrs["density_sigma"]),
        n=int(attrs["density_n"]),
        seed=int(attrs["density_seed"]),
        probe=attrs["density_probe"],
        steps=nodes.shape[1],
        matvecs=int(attrs["density_matvecs"]),
        wall_time_s=float(attrs["density_wall_time_s"]),
        settings={"n_probes": len(nodes), "steps": int(attrs["density_steps"])},
        **_negative(arrays, attrs),
    )


def _negative(arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The stored negative-mass bounds; none in files written before they were recorded."""
    if "density_negative" not in arrays:
        return {}
    return {
        "negative": np.asarray(arrays["density_negative"], dtype=np.float64),
        "epsilon": float(attrs["density_negative_epsilon"]),
    }


def group_summary(arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-ready view (lists, NaN → None) of a ``hessian/`` group, for the CLI and info."""
    summary: dict[str, Any] = {
        k: _plain(v)
        for k, v in attrs.items()
        if not k.startswith(("encoding-", "density_", "spread_", "plane_"))
    }
    top, bottom = arrays.get("top_eigenvalues"), arrays.get("bottom_eigenvalues")
    summary["top_eigenvalues"] = _plain(top) if top is not None else []
    summary["bottom_eigenvalues"] = _plain(bottom) if bottom is not None else []
    for name in ("top_residuals", "bottom_residuals"):
        if name in arrays:
            summary[name] = _plain(arrays[name])
    if top is not None and bottom is not None and len(top) and len(bottom) and top[0] != 0:
        summary["ratio"] = _plain(abs(bottom[0] / top[0]))  # Li et al. 2018 §6
    if "curvature_ratio" in arrays:
        ratio = np.asarray(arrays["curvature_ratio"])
        finite = ratio[np.isfinite(ratio)]
        summary["curvature_map"] = {
            "shape": list(ratio.shape),
            "x": _plain(arrays["curvature_x"]),
            "y": _plain(arrays["curvature_y"]) if "curvature_y" in arrays else None,
            "ratio": _plain(ratio),
            "lambda_max": _plain(arrays["lambda_max"]),
            "lambda_min": _plain(arrays["lambda_min"]),
            "ratio_median": _plain(float(np.median(finite))) if finite.size else None,
            "ratio_max": _plain(float(finite.max())) if finite.size else None,
        }
        if "curvature_residual_max" in arrays:
            summary["curvature_map"].update(
                steps=_plain(attrs.get("curvature_steps")),
                residual_max=_plain(arrays["curvature_residual_max"]),
                residual_min=_plain(arrays["curvature_residual_min"]),
            )
        if "curvature_converged" in arrays:
            converged = np.asarray(arrays["curvature_converged"], dtype=bool)
            summary["curvature_map"].update(
                tol=_plain(attrs.get("curvature_tol")),
                converged=converged.tolist(),
                not_converged=int((~converged).sum()),
            )
    density = density_from_group(arrays, attrs)
    if density is not None:
        summary["density"] = _density_summary(density)
    spread = spread_from_group(arrays, attrs)
    if spread is not None:
        summary["data_spread"] = _plain(spread.summary())
    plane = plane_summary(arrays, attrs)
    if plane is not None:
        summary["plane_curvature"] = _plain(plane)
    return summary


def _density_summary(density: SpectralDensity) -> dict[str, Any]:
    """What the density plot and its one-line summary need; the nodes and weights recorded."""
    summary: dict[str, Any] = _plain(
        {
            "probes": len(density.nodes),
            "steps": density.settings["steps"],
            "seed": density.seed,
            "probe": density.probe,
            "sigma": density.sigma,
            "matvecs": density.matvecs,
            "wall_time_s": density.wall_time_s,
            "node_min": density.bottom,
            "node_max": density.top,
            "mean": density.moment(1),  # estimates tr(H)/n
            **_negative_summary(density),
            "grid": density.grid,
            "density": density.density,
            "nodes": density.nodes,
            "weights": density.weights,
        }
    )
    return summary


def _negative_summary(density: SpectralDensity) -> dict[str, Any]:
    """Mass below −ε with its bounds; all None for a file that predates them, rather than the
    Gauss nodes' count, which a cluster of zeros makes arbitrary."""
    negative = density.negative_mass
    if negative is not None:
        return negative.to_dict()
    keys = ("fraction", "fraction_max", "stderr", "interval", "epsilon")
    return {f"negative_{key}": None for key in keys}


def _plain(value: Any) -> Any:
    """NumPy → lists/floats, non-finite floats → None (JSON has no NaN)."""
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
