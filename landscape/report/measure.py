"""Each surface net's analyses for a report: gradient flow at initialization and trained, the
top Hessian eigenvalues, the SLQ eigenvalue density, a curvature map over the first range's
surface, and λmax along training, with the time each took (``reproduce`` caches the result).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from landscape.report.recipe import ReproduceSpec
from landscape.specs import ResolvedPrecision

# Hessian products (top eigenvalues, density, curvature map, sharpness) and gradient flow are
# strict fp32 whatever the surfaces' precision: second-order products and per-layer gradient
# norms of a nearly flat net are where TF32 or bf16 rounding would be the measurement.
ANALYSIS_PRECISION: ResolvedPrecision = "fp32"


def measure(
    spec: ReproduceSpec,
    model_name: str,
    seed: int,
    checkpoint: str,
    surface_path: str,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Every analysis of one trained net (its checkpoint, on the CPU for gradient flow and on
    the recipe's device for Hessian products), in ``ANALYSIS_PRECISION``; the curvature map
    over ``surface_path``'s grid and directions. ``should_stop`` is asked before every
    Hessian-vector product (``CancelledError``), so a cancelled report stops in its analyses
    too."""
    from landscape.analysis.curvature import curvature_map
    from landscape.analysis.gradient_flow import gradient_flow
    from landscape.analysis.hessian import HessianOperator, LanczosOptions, hessian_spectrum
    from landscape.analysis.shape_metrics import curvature_nonconvex_fraction
    from landscape.analysis.spectral_density import spectral_density
    from landscape.data import load_data
    from landscape.models import build
    from landscape.sources.checkpoint import load_checkpoint
    from landscape.storage import read_directions, read_surface

    model, meta = load_checkpoint(checkpoint)
    x, y = load_data(spec.data, "train")
    subset = (x[: spec.hessian_samples], y[: spec.hessian_samples])
    started = time.perf_counter()
    times: dict[str, float] = {}

    def timed(part: str, clock: float) -> None:
        times[part] = time.perf_counter() - clock

    clock = time.perf_counter()
    flow_trained = gradient_flow(model, (x, y), precision=ANALYSIS_PRECISION)
    torch.manual_seed(seed)  # the initialization train_model starts from
    initial = build(model_name, **meta["model_args"])
    flow_init = gradient_flow(initial, (x, y), precision=ANALYSIS_PRECISION)
    timed("gradient_flow", clock)
    lanczos = LanczosOptions(tol=spec.lanczos_tol, seed=seed)
    clock = time.perf_counter()
    hessian = hessian_spectrum(
        model, subset, top=spec.top_eigenvalues, device=spec.device, options=lanczos,
        precision=ANALYSIS_PRECISION, should_stop=should_stop,
    )  # fmt: skip
    timed("top_eigenvalues", clock)
    clock = time.perf_counter()
    operator = HessianOperator(
        model, subset, device=spec.device, precision=ANALYSIS_PRECISION, should_stop=should_stop
    )
    density = spectral_density(
        operator.matvec, operator.n, n_probes=spec.slq_probes, steps=spec.slq_steps, seed=seed
    )
    timed("density", clock)
    surface = read_surface(surface_path)
    curvature = curvature_map(
        model,
        subset,
        read_directions(surface_path),
        surface.x,
        surface.y,
        n=spec.curvature_points,
        options=lanczos,
        steps=spec.curvature_steps,
        device=spec.device,
        should_stop=should_stop,
    )
    times["curvature"] = curvature.wall_time_s
    clock = time.perf_counter()
    sharpness = _sharpness_along_training(spec, seed, checkpoint, subset, should_stop)
    timed("sharpness", clock)
    return {
        "sharpness": sharpness,
        "gradient_flow": {"init": flow_init.to_dict(), "trained": flow_trained.to_dict()},
        "hessian": {
            "top_eigenvalues": hessian.top,
            "n_params": hessian.n_params,
            "n_samples": hessian.n_samples,
            "matvecs": hessian.matvecs,
        },
        "density": density.to_dict(),
        "curvature": {
            "x": curvature.x,
            "y": curvature.y,
            "lambda_min": curvature.lambda_min,
            "lambda_max": curvature.lambda_max,
            "residual_min": curvature.residual_min,
            "residual_max": curvature.residual_max,
            "steps": curvature.steps,
            "matvecs": curvature.matvecs,
            "nonconvex_fraction": curvature_nonconvex_fraction(
                curvature.lambda_min, curvature.lambda_max
            ),
            "wall_time_s": curvature.wall_time_s,
        },
        "analysis_times_s": times,
        "analysis_wall_time_s": time.perf_counter() - started,
    }


def _sharpness_along_training(
    spec: ReproduceSpec,
    seed: int,
    checkpoint: str,
    subset: tuple[torch.Tensor, torch.Tensor],
    should_stop: Callable[[], bool] | None = None,
) -> list[dict[str, Any]]:
    """λmax of the training loss on the Hessian's images at each stored snapshot, in epoch
    order, each Lanczos run warm-started from the last eigenvector; [] without snapshots."""
    from landscape.analysis.sharpness import SharpnessOptions, SharpnessTracker, snapshot_step
    from landscape.sources.checkpoint import load_checkpoint
    from landscape.train import snapshot_dir

    snapshots = sorted(snapshot_dir(Path(checkpoint)).glob("epoch_*.pt"))
    options = SharpnessOptions(tol=spec.lanczos_tol, seed=seed)
    tracker = SharpnessTracker(
        subset, device=spec.device, options=options, precision=ANALYSIS_PRECISION,
        should_stop=should_stop,
    )  # fmt: skip
    records = []
    for path in snapshots:
        model, meta = load_checkpoint(path)
        result = tracker.measure(model)
        records.append(
            {
                "epoch": snapshot_step(path, meta),
                "lambda_max": result.lambda_max,
                "loss": result.loss,
                "matvecs": result.matvecs,
            }
        )
    return records
