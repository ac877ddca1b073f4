"""Skip vs plain, measured: one recipe fixed in advance, every number the story needs, one report.

``reproduce(spec, out_dir)`` trains each net of each pair (with and without shortcuts) under
``spec``'s recipe for every seed, then measures, per net: the degradation table (final train /
test loss and accuracy, mean ± spread over seeds), loss surfaces over each range of
``spec.ranges`` (first seed; filter-normalized random directions, Li et al. 2018), the
surface metrics and scale-free shape metrics, a curvature map (``|λ_min/λ_max|``, Li et al.
§6), the top Hessian eigenvalues and the SLQ eigenvalue density, the gradient flow at
initialization and after training, and λmax along training (the first seed's snapshots).
It writes ``report.json`` (every number) and an offline ``report.html``. Everything is cached
under ``out_dir``: a rerun with the same recipe reuses checkpoints, surfaces and analyses, and
an interrupted one resumes (the library's own rules). A net whose training diverged
(non-finite final loss) keeps its degradation row and is marked ``diverged`` instead of
measured: a plain deep net that cannot be trained is a result too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from landscape.errors import CancelledError
from landscape.report.findings import findings
from landscape.report.recipe import ReproduceSpec
from landscape.specs import (
    DirectionSpec,
    EngineOptions,
    SurfaceSpec,
    TrainSpec,
    to_dict,
)

log = logging.getLogger(__name__)


REPORT_FORMAT = "landscape-reproduce/1"


Progress = Callable[[str, int, int], None]  # (what is running, steps done, steps in all)


@dataclass(frozen=True)
class ReproduceResult:
    report: dict[str, Any]
    json_path: Path
    html_path: Path
    wall_time_s: float


def _key(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def reproduce(
    spec: ReproduceSpec,
    out_dir: str | Path,
    *,
    on_progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ReproduceResult:
    """Run (or finish) the recipe into ``out_dir``; returns the report and where it is."""
    from landscape.report.html import write_report_html

    out = Path(out_dir)
    for sub in ("checkpoints", "surfaces", "analysis"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    surface_runs = [(m, s) for m in spec.models for s in spec.seeds[: spec.surface_seeds]]
    total = len(spec.models) * len(spec.seeds) + len(surface_runs) * (len(spec.ranges) + 1)
    done = 0

    def step(what: str) -> None:
        nonlocal done
        if should_stop is not None and should_stop():
            raise CancelledError(f"reproduction stopped before {what}; rerun to resume")
        if on_progress is not None:
            on_progress(what, done, total)
        log.info("reproduce [%d/%d] %s", done, total, what)
        done += 1

    trained: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in spec.models}
    for model in spec.models:
        for seed in spec.seeds:
            step(f"train {model} seed {seed}")
            trained[model][seed] = _train(spec.train_spec(model, seed), out, should_stop)
    nets: dict[str, dict[str, Any]] = {}
    for model, seed in surface_runs:
        checkpoint = trained[model][seed]["checkpoint"]
        if not math.isfinite(trained[model][seed]["train_loss"]):
            # NaN weights: no surface, Hessian or gradient to measure; the report says so
            for _ in range(len(spec.ranges) + 1):
                step(f"skip {model} seed {seed}: its training diverged")
            nets[f"{model}/seed{seed}"] = {"model": model, "seed": seed, "diverged": True}
            continue
        surfaces = []
        for half, n in spec.ranges:
            step(f"surface {model} seed {seed} ±{half:g} {n}×{n}")
            surfaces.append(_surface(spec, checkpoint, half, n, out, should_stop))
        step(f"Hessian, gradient flow and sharpness {model} seed {seed}")
        analysis = _analysis(spec, model, seed, checkpoint, surfaces[0]["path"], out)
        nets[f"{model}/seed{seed}"] = {
            "model": model,
            "seed": seed,
            "surfaces": surfaces,
            **analysis,
        }
    report = {
        "format": REPORT_FORMAT,
        "recipe": to_dict(spec),
        "train_specs": {m: to_dict(spec.train_spec(m, spec.seeds[0])) for m in spec.models},
        "degradation": _degradation(spec, trained),
        "runs": {m: {str(s): r for s, r in per.items()} for m, per in trained.items()},
        "nets": nets,
        "hardware": _hardware(),
        "wall_time_s": time.perf_counter() - start,
    }
    plain: dict[str, Any] = _plain(report)
    plain["findings"] = findings(plain)
    json_path = out / "report.json"
    json_path.write_text(json.dumps(plain, indent=1, allow_nan=False))
    html_path = write_report_html(plain, out / "report.html")
    if on_progress is not None:
        on_progress("report written", total, total)
    return ReproduceResult(plain, json_path, html_path, plain["wall_time_s"])


def _train(
    train_spec: TrainSpec, out: Path, should_stop: Callable[[], bool] | None
) -> dict[str, Any]:
    """Train once per recipe: an existing checkpoint of the same spec is reused."""
    from landscape.sources.checkpoint import load_checkpoint
    from landscape.train import train_model

    path = checkpoint_file(train_spec, out)
    if path.exists():
        _, meta = load_checkpoint(path)
    else:
        meta = train_model(train_spec, path, should_stop=should_stop)
    keys = ("train_loss", "train_acc", "test_loss", "test_acc", "wall_time_s", "epochs")
    return {"checkpoint": str(path), **{k: meta[k] for k in keys}}


def checkpoint_file(train_spec: TrainSpec, out: Path) -> Path:
    """Where a recipe's trained net is cached: one file per training spec."""
    key = _key(to_dict(train_spec))
    return out / "checkpoints" / f"{train_spec.model}-s{train_spec.seed}-{key}.pt"


def surface_file(checkpoint: str | Path, half: float, n: int, out: Path) -> Path:
    """Where a net's surface over ±``half``, ``n``×``n`` is cached."""
    return out / "surfaces" / f"{Path(checkpoint).stem}-r{half:g}-n{n}.h5"


def _surface(
    spec: ReproduceSpec,
    checkpoint: str,
    half: float,
    n: int,
    out: Path,
    should_stop: Callable[[], bool] | None,
) -> dict[str, Any]:
    """One surface over ±``half`` (``compute_surface`` resumes or reuses its file)."""
    from landscape.analysis.shape_metrics import shape_metrics
    from landscape.analysis.surface_metrics import surface_metrics
    from landscape.storage import read_surface
    from landscape.surface import compute_surface

    surface_spec = SurfaceSpec(
        checkpoint=checkpoint,
        data=spec.data,
        grid=spec.grid(half, n),
        directions=DirectionSpec(seed=spec.direction_seed),
        splits=("train",),
    )
    path = surface_file(checkpoint, half, n, out)
    options = EngineOptions(device=spec.device, workers=spec.workers)
    compute_surface(surface_spec, path, options=options, should_stop=should_stop)
    surface = read_surface(path)
    loss = surface.values["train_loss"]
    metrics = surface_metrics(surface.x, surface.y, surface.values, ("train_loss",))
    return {
        "path": str(path),
        "half_width": half,
        "n": n,
        "x": surface.x,
        "y": surface.y,
        "train_loss": loss,
        "train_acc": surface.values["train_acc"],
        "metrics": metrics,
        "shape": shape_metrics(loss),
        "wall_time_s": surface.attrs.get("wall_time_s"),
    }


def _analysis(
    spec: ReproduceSpec, model: str, seed: int, checkpoint: str, surface_path: str, out: Path
) -> dict[str, Any]:
    """Curvature map, Hessian spectrum and density, gradient flow; cached by their inputs."""
    from landscape.sources.checkpoint import file_digest

    settings = {
        "checkpoint_sha256": file_digest(checkpoint),
        "surface": Path(surface_path).name,
        "curvature_points": spec.curvature_points,
        "curvature_steps": spec.curvature_steps,
        "hessian_samples": spec.hessian_samples,
        "top": spec.top_eigenvalues,
        "tol": spec.lanczos_tol,
        "probes": spec.slq_probes,
        "steps": spec.slq_steps,
        "data": to_dict(spec.data),
        "init": to_dict(spec.train_spec(model, seed)),
        "sharpness": "v1",  # λmax along training on the Hessian's images
    }
    cache = out / "analysis" / f"{Path(checkpoint).stem}-{_key(settings)}.json"
    if cache.exists():
        cached: dict[str, Any] = json.loads(cache.read_text())
        return cached
    result = _plain(_measure(spec, model, seed, checkpoint, surface_path))
    cache.write_text(json.dumps(result, allow_nan=False))
    return dict(result)


def _measure(
    spec: ReproduceSpec, model_name: str, seed: int, checkpoint: str, surface_path: str
) -> dict[str, Any]:
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
    flow_trained = gradient_flow(model, (x, y))
    torch.manual_seed(seed)  # the initialization train_model starts from
    flow_init = gradient_flow(build(model_name, **meta["model_args"]), (x, y))
    timed("gradient_flow", clock)
    lanczos = LanczosOptions(tol=spec.lanczos_tol, seed=seed)
    clock = time.perf_counter()
    hessian = hessian_spectrum(
        model, subset, top=spec.top_eigenvalues, device=spec.device, options=lanczos
    )
    timed("top_eigenvalues", clock)
    clock = time.perf_counter()
    operator = HessianOperator(model, subset, device=spec.device)
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
    )
    times["curvature"] = curvature.wall_time_s
    clock = time.perf_counter()
    sharpness = _sharpness_along_training(spec, seed, checkpoint, subset)
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
    spec: ReproduceSpec, seed: int, checkpoint: str, subset: tuple[torch.Tensor, torch.Tensor]
) -> list[dict[str, Any]]:
    """λmax of the training loss on the Hessian's images at each stored snapshot, in epoch
    order, each Lanczos run warm-started from the last eigenvector; [] without snapshots."""
    from landscape.analysis.sharpness import SharpnessOptions, SharpnessTracker, snapshot_step
    from landscape.sources.checkpoint import load_checkpoint
    from landscape.train import snapshot_dir

    snapshots = sorted(snapshot_dir(Path(checkpoint)).glob("epoch_*.pt"))
    options = SharpnessOptions(tol=spec.lanczos_tol, seed=seed)
    tracker = SharpnessTracker(subset, device=spec.device, options=options)
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


def _degradation(
    spec: ReproduceSpec, trained: dict[str, dict[int, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Per net: each final number's mean, sample std (spread) and min/max over seeds."""
    rows = []
    for model in spec.models:
        row: dict[str, Any] = {"model": model, "seeds": list(spec.seeds)}
        for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            values = np.asarray([trained[model][s][key] for s in spec.seeds], dtype=np.float64)
            row[key] = {
                "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                "min": float(values.min()),
                "max": float(values.max()),
                "values": values.tolist(),
            }
        rows.append(row)
    return rows


def _hardware() -> dict[str, Any]:
    """The CPU model and cores (and GPU) that every measured time in the report is from."""
    import os
    import platform

    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in
             (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
             if line.startswith("model name")]  # fmt: skip
    cpu = names[0] if names else platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cpu_cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__}


def _plain(value: Any) -> Any:
    """NumPy → lists/floats, non-finite floats → None, so the JSON is strict."""
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
