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
measured: a plain deep net that cannot be trained is a result too. Surfaces are computed at
the recipe's ``precision`` (strict fp32 unless it says otherwise), everything else in strict
fp32, and the report records each (``precision``).
"""

from __future__ import annotations

import dataclasses
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

from landscape.errors import CancelledError, DivergedError, SpecError
from landscape.report.findings import findings
from landscape.report.measure import ANALYSIS_PRECISION, measure
from landscape.report.recipe import ReproduceSpec
from landscape.specs import (
    DirectionSpec,
    EngineOptions,
    Precision,
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


def surface_options(spec: ReproduceSpec, options: EngineOptions | None = None) -> EngineOptions:
    """How the report's surfaces are evaluated, with the recipe's precision resolved on its
    device (so tf32 or bf16 on a CPU is refused before any net trains): ``options`` (a service
    worker's GPUs, processes, compile, backend, Ray address), else the recipe's device and
    workers. ``options`` naming another device, workers or precision than the recipe would
    make the report record what it did not compute, so it is refused."""
    from landscape.engine.devices import resolve_device
    from landscape.engine.plan import resolve_precision

    if options is None:
        options = EngineOptions(device=spec.device, workers=spec.workers, precision=spec.precision)
    recipe = (spec.device, spec.workers, spec.precision)
    if (options.device, options.workers, options.precision) != recipe:
        raise SpecError(
            f"engine options (device {options.device!r}, workers {options.workers}, precision "
            f"{options.precision!r}) differ from the recipe's (device {spec.device!r}, workers "
            f"{spec.workers}, precision {spec.precision!r})"
        )
    precision = resolve_precision(options, resolve_device(options.device))
    return dataclasses.replace(options, precision=precision)


def reproduce(
    spec: ReproduceSpec,
    out_dir: str | Path,
    *,
    options: EngineOptions | None = None,
    on_progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ReproduceResult:
    """Run (or finish) the recipe into ``out_dir``; returns the report and where it is.
    ``options``: how surfaces are evaluated (``surface_options``; default the recipe's)."""
    from landscape.report.html import write_report_html
    from landscape.train import TRAIN_PRECISION

    engine = surface_options(spec, options)
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
            surfaces.append(_surface(spec, engine, checkpoint, half, n, out, should_stop))
        step(f"Hessian, gradient flow and sharpness {model} seed {seed}")
        analysis = _analysis(spec, model, seed, checkpoint, surfaces[0]["path"], out, should_stop)
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
        "precision": {
            "surfaces": engine.precision,
            "training": TRAIN_PRECISION,
            "hessian": ANALYSIS_PRECISION,
            "gradient_flow": ANALYSIS_PRECISION,
        },
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
        began = time.perf_counter()
        try:
            meta = train_model(train_spec, path, should_stop=should_stop)
        except DivergedError as exc:
            # one net of a pair diverging is a finding, not a failed report: its row says so
            log.info("%s: %s", train_spec.model, exc)
            nan = float("nan")
            return {
                "checkpoint": None,
                **dict.fromkeys(("train_loss", "train_acc", "test_loss", "test_acc"), nan),
                "wall_time_s": time.perf_counter() - began,
                "epochs": train_spec.epochs,
            }
    keys = ("train_loss", "train_acc", "test_loss", "test_acc", "wall_time_s", "epochs")
    return {"checkpoint": str(path), **{k: meta[k] for k in keys}}


def checkpoint_file(train_spec: TrainSpec, out: Path) -> Path:
    """Where a recipe's trained net is cached: one file per training spec."""
    key = _key(to_dict(train_spec))
    return out / "checkpoints" / f"{train_spec.model}-s{train_spec.seed}-{key}.pt"


def surface_file(
    checkpoint: str | Path, half: float, n: int, out: Path, precision: Precision
) -> Path:
    """Where a net's surface over ±``half``, ``n``×``n`` at ``precision`` (as resolved by
    ``surface_options``) is cached; fp32 files keep the name they had before precision was a
    recipe value."""
    suffix = "" if precision == "fp32" else f"-{precision}"
    return out / "surfaces" / f"{Path(checkpoint).stem}-r{half:g}-n{n}{suffix}.h5"


def _surface(
    spec: ReproduceSpec,
    options: EngineOptions,
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
    path = surface_file(checkpoint, half, n, out, options.precision)
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
    spec: ReproduceSpec,
    model: str,
    seed: int,
    checkpoint: str,
    surface_path: str,
    out: Path,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Curvature map, Hessian spectrum and density, gradient flow; cached by their inputs
    (``should_stop`` is asked before every Hessian-vector product)."""
    from landscape.sources.checkpoint import file_digest

    half, n = spec.ranges[0]
    settings = {
        "checkpoint_sha256": file_digest(checkpoint),
        # the map's grid, named as its fp32 file: its directions and coordinates, all the
        # analyses read of a surface, are the same at every precision
        "surface": surface_file(checkpoint, half, n, out, "fp32").name,
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
    result = _plain(measure(spec, model, seed, checkpoint, surface_path, should_stop))
    cache.write_text(json.dumps(result, allow_nan=False))
    return dict(result)


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
