"""How long a report will take on this machine, said before it starts.

A FLOP count cannot say it: on a CPU a Transformer's many small operations run several times
slower per FLOP than a ResNet's convolutions. So each net's unit costs are *timed* here, in a
few seconds, on the recipe's own data: one optimizer step at the recipe's batch size, one
forward pass over the training split (a surface point, an epoch's evaluation), one
Hessian-vector product on the Hessian's images, each at the precision ``reproduce`` computes
it in, and on CUDA between synchronizations (kernels run asynchronously: a timer that does not
wait for them measures their launch). Each step of ``reproduce`` is then a count of
those units (``step_estimates``, in the order ``reproduce`` runs them), and a step whose result
is cached in the output folder costs nothing. The counts of Lanczos products that converge
to a tolerance (ARPACK) are typical values, not bounds: the estimate is a forecast, and the
progress bar moves by these weights, so its ETA corrects itself from the real pace.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from landscape.report.recipe import ReproduceSpec

# Hessian-vector products of one ARPACK run that converges to a report's 1e-2: about two
# restarts of its Krylov basis (max(2k + 1, 20)); a warm-started λmax (basis 12) about one.
ARPACK_RESTARTS_TYPICAL = 2
SHARPNESS_PRODUCTS = 14
ENGINE_START_S = 4.0  # a surface's set-up: data, directions, engine processes
GRADIENT_PASSES = 3.0  # a full-data gradient (gradient flow) in forward-pass units


@dataclass(frozen=True)
class UnitCosts:
    """Seconds on this machine for one net of the recipe."""

    train_step: float  # forward + backward + SGD step on one batch
    forward_all: float  # eval forward over the whole training split
    forward_test: float  # eval forward over the test split
    hvp: float  # one Hessian-vector product on ``hessian_samples`` images


@dataclass(frozen=True)
class StepEstimate:
    what: str  # as ``reproduce`` names the step in its progress
    seconds: float  # 0 when its result is cached


def _synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued kernels (CUDA); nothing to wait for elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(run: Callable[[], object], device: torch.device, repeats: int = 3) -> float:
    """Median seconds of ``run`` on ``device`` after one untimed warm-up call, each timed from
    an idle device to the end of its work there."""
    run()
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        run()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_units(spec: ReproduceSpec, model_name: str) -> UnitCosts:
    """Time the unit costs of ``model_name`` under ``spec`` (initial weights: the same cost)."""
    from landscape.analysis.hessian import HessianOperator
    from landscape.data import dataset_info, load_data
    from landscape.engine.devices import resolve_device
    from landscape.engine.precision import compute_in, resolve
    from landscape.models import build
    from landscape.report.measure import ANALYSIS_PRECISION
    from landscape.train import TRAIN_PRECISION

    device = resolve_device(spec.device)
    precision = resolve(spec.precision, device)  # the surfaces'
    x, y = load_data(spec.data, "train", device=device)
    x_test, _ = load_data(spec.data, "test", device=device)
    info = dataset_info(spec.data.name, spec.data.data_root)
    args = {**dict(spec.model_args), **info.model_shape()}
    torch.manual_seed(0)
    model = build(model_name, **args).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=spec.momentum)
    batch = slice(0, min(spec.batch_size, len(x)))
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad()
        loss_fn(model(x[batch]), y[batch]).backward()
        optimizer.step()

    def forward(data: torch.Tensor) -> Callable[[], object]:
        def run() -> None:
            with torch.no_grad(), compute_in(precision, device):  # the surfaces' precision
                for start in range(0, len(data), 1024):
                    model(data[start : start + 1024])

        return run

    model.train()
    with compute_in(TRAIN_PRECISION, device):
        train_step = _timed(step, device)
    model.eval()
    forward_all, forward_test = _timed(forward(x), device), _timed(forward(x_test), device)
    h = min(spec.hessian_samples, len(x))
    operator = HessianOperator(
        model, (x[:h], y[:h]), device=str(device), precision=ANALYSIS_PRECISION
    )
    vector = torch.randn(operator.n, dtype=torch.float64)
    hvp = _timed(lambda: operator.hvp(vector), device, repeats=2)
    return UnitCosts(train_step, forward_all, forward_test, hvp)


def _training_s(spec: ReproduceSpec, units: UnitCosts, n_train: int, model: str) -> float:
    """Every epoch's steps and test evaluation, then the final evaluation of both splits."""
    warmup = spec.warmup_epochs if model in spec.warmup_models else 0
    epochs = spec.epochs + warmup
    steps = math.ceil(n_train / spec.batch_size)
    final = units.forward_all + units.forward_test
    return epochs * (steps * units.train_step + units.forward_test) + final


def _analysis_s(spec: ReproduceSpec, units: UnitCosts) -> float:
    """Gradient flow (two full-data gradients), then the Hessian products: top eigenvalues,
    the density's probes, the curvature map, λmax at each snapshot."""
    krylov = max(2 * spec.top_eigenvalues + 1, 20)
    snapshots = spec.sharpness_points + 2 if spec.sharpness_points else 0
    products = (
        ARPACK_RESTARTS_TYPICAL * krylov
        + spec.slq_probes * spec.slq_steps
        + spec.curvature_points**2 * spec.curvature_steps
        + snapshots * SHARPNESS_PRODUCTS
    )
    return 2 * GRADIENT_PASSES * units.forward_all + products * units.hvp


def step_estimates(
    spec: ReproduceSpec,
    out: Path,
    units: dict[str, UnitCosts],
    n_train: int,
) -> list[StepEstimate]:
    """Each step of ``reproduce(spec, out)`` in its order, with its forecast seconds: 0 for a
    result cached in ``out`` (a trained checkpoint, a surface file, an analysis; a partial
    surface's rest is not forecast)."""
    from landscape.report.reproduce import checkpoint_file, surface_file, surface_options

    precision = surface_options(spec).precision
    steps: list[StepEstimate] = []
    for model in spec.models:
        for seed in spec.seeds:
            cached = checkpoint_file(spec.train_spec(model, seed), out).exists()
            seconds = 0.0 if cached else _training_s(spec, units[model], n_train, model)
            steps.append(StepEstimate(f"train {model} seed {seed}", seconds))
    for model in spec.models:
        for seed in spec.seeds[: spec.surface_seeds]:
            checkpoint = checkpoint_file(spec.train_spec(model, seed), out)
            for half, n in spec.ranges:
                cached = surface_file(checkpoint, half, n, out, precision).exists()
                done = cached and checkpoint.exists()
                seconds = ENGINE_START_S + n * n * units[model].forward_all
                what = f"surface {model} seed {seed} ±{half:g} {n}×{n}"
                steps.append(StepEstimate(what, 0.0 if done else seconds))
            analysed = any((out / "analysis").glob(f"{checkpoint.stem}-*.json"))
            what = f"Hessian, gradient flow and sharpness {model} seed {seed}"
            steps.append(StepEstimate(what, 0.0 if analysed else _analysis_s(spec, units[model])))
    return steps


def estimate_report(spec: ReproduceSpec, out: Path) -> list[StepEstimate]:
    """Time each net's units (a few seconds each) and forecast every step of the report."""
    from landscape.data import load_data

    n_train = len(load_data(spec.data, "train")[1])
    units = {model: time_units(spec, model) for model in spec.models}
    return step_estimates(spec, out, units, n_train)


def minutes(seconds: float) -> str:
    """``"about 7 minutes"``, ``"under a minute"``: a forecast's precision, no more."""
    if seconds < 60:
        return "under a minute"
    if seconds < 5400:
        return f"about {round(seconds / 60)} minutes"
    return f"about {seconds / 3600:.1f} hours"
