"""What a job will cost, estimated from its plan before it is queued: every formula in one place.

A request names a model and how much work to do with it, so its cost is known before anything
runs. ``net_cost`` builds the model on PyTorch's ``meta`` device (shapes without storage: no
memory is allocated in the server, whatever the width) and counts its parameters, the FLOPs of
one sample's forward pass (matrix products and convolutions, by the formulas of
``torch.utils.flop_counter``) and the activation bytes that forward keeps for the backward pass
(``saved_tensors_hooks``). Each job kind multiplies those by what its plan does (samples,
epochs, grid points, Hessian-vector products) into an ``Estimate``: total FLOPs (at most:
what the budgets check), the FLOPs it is expected to compute (what its time is estimated
from: a Lanczos run usually converges before its cap), peak memory and the largest net's
parameters. ``api/planning/budget.py`` compares that with this server's
budgets and refuses a job over one (422), saying what would fit.

These are estimates, not measurements; each constant below says what it assumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.autograd.graph import saved_tensors_hooks
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from landscape.analysis.hessian import arpack_cap, krylov
from landscape.analysis.sharpness import SharpnessOptions
from landscape.data import dataset_info
from landscape.errors import LandscapeError, SpecError
from landscape.explore.permutation import ladder, round_up
from landscape.explore.spec import EstimateSpec
from landscape.mnist1d_data import VARIANTS as MNIST1D_VARIANTS
from landscape.models import SHAPE_KEYS, build, check_model_args, list_models
from landscape.report.recipe import ReproduceSpec
from landscape.specs import AnalysisSpec, DataSpec, SurfaceSpec, TrainSpec
from landscape.storage import Surface

# A training step is a forward and a backward pass; the backward computes gradients for both
# the inputs and the weights of every layer, twice the forward's products.
TRAIN_FACTOR = 3
# A Hessian-vector product by double backward differentiates the gradient's graph again:
# about two gradients.
HVP_FACTOR = 2 * TRAIN_FACTOR
# Samples per forward pass of a surface evaluation and of a Hessian product (the engine sizes
# its own batches to free memory; AnalysisSpec's batch_size), for the memory estimates.
EVAL_BATCH = 256
HESSIAN_BATCH = 256
FLOW_BATCH = 128  # landscape.analysis.gradient_flow's batch, the training batch
FLOAT_BYTES = 4
BASIS_BYTES = 8  # Lanczos basis vectors are float64 (numpy)
# PCA directions (landscape.directions.pca_directions) hold every snapshot's parameters at
# once: float32 as loaded, then float64 as rows, stacked, centered, in the SVD's components
# and LAPACK's own copy. Peak RSS measured 52-56 bytes per parameter per snapshot (1-2 M
# parameters, 41-81 snapshots).
PCA_BYTES = 56
# A costing runs in the API process: every so often it hands the GIL to the server's other
# threads, so one costing never holds up /healthz or another request for long (without it,
# /healthz waited 250-360 ms behind costing five zoo nets on a loaded 2-core box; 20-40 with).
YIELD_EVERY_S = 0.002
YIELD_FOR_S = 0.0002
# The splits of the registered data sets (digits: the stratified 80/20 split of 1797 images).
SPLIT_SIZES: dict[str, dict[str, int]] = {
    "digits": {"train": 1437, "test": 360},
    "cifar10": {"train": 50_000, "test": 10_000},
    "cifar100": {"train": 50_000, "test": 10_000},
    "mnist": {"train": 60_000, "test": 10_000},
    "fashion-mnist": {"train": 60_000, "test": 10_000},
    **{
        name: {"train": v.samples - v.test_samples, "test": v.test_samples}
        for name, v in MNIST1D_VARIANTS.items()
    },
}
# Restarts an ARPACK run for the top eigenvalues is expected to need (the cap allows
# ARPACK_RESTARTS): top 10 of the trained 11×11 form net (mlp-plain, digits, 200 images)
# converged in 38 products, its first basis of 21 and a part of one restart, where the cap
# counts 241; a warm-started λmax (sharpness) converges in one or two.
ARPACK_EXPECTED_RESTARTS = 1
UNKNOWN_SPLIT_SIZE = 10_000_000  # a data set missing above counts as the largest subset allowed

# Samples per point an estimate's relative target is expected to need: `python -m bench.explore`
# (an MLP, MNIST-1D, 50,000 training samples, 21×21 over ±1, stratified permutation, planned
# looks) read 1,180 a point on average at ±5 % (6,650 at ±2 %). The need grows about as
# 1/target² (a standard error falls as 1/√n) and not with N.
EXPLORE_SAMPLES_AT_5_PERCENT = 1180
# An absolute target t needs about (2·s/t)² samples: s, the per-sample spread of the loss
# differences to the centre, taken as one nat; 2, a 95 % interval's quantile.
EXPLORE_ABSOLUTE_SPREAD = 1.0

# (in_channels, image_size, num_classes), and spatial_dims last for 1-D signals only
Shape = tuple[int, ...]


@dataclass(frozen=True)
class NetCost:
    """One net, measured on the meta device (per sample: FLOPs of its forward pass, bytes it
    keeps for the backward)."""

    params: int
    flops: int
    activation_bytes: int


@dataclass(frozen=True)
class Work:
    """One part of a job: its FLOPs and the memory it holds while it runs. ``expected_flops``:
    what it is expected to compute when that is less than its bound ``flops`` (a Lanczos run
    stops when it converges, usually long before its cap); None: ``flops``."""

    flops: float
    memory_bytes: float
    expected_flops: float | None = None

    @property
    def timed_flops(self) -> float:
        return self.flops if self.expected_flops is None else self.expected_flops


@dataclass(frozen=True)
class Estimate:
    """What one job costs: FLOPs of all its parts, the peak memory of the largest (they run
    one after another), the largest net's parameters."""

    what: str
    parts: tuple[tuple[str, Work], ...]
    params: int

    @property
    def flops(self) -> float:
        return sum(work.flops for _, work in self.parts)

    @property
    def time_flops(self) -> float:
        """The FLOPs its run time is estimated from: the expected work, not the bound the
        budgets check (``flops``)."""
        return sum(work.timed_flops for _, work in self.parts)

    @property
    def memory_bytes(self) -> float:
        return max(work.memory_bytes for _, work in self.parts)


def data_shape(data: DataSpec) -> Shape:
    info = dataset_info(data.name, data.data_root)
    signal = (info.spatial_dims,) if info.spatial_dims != 2 else ()
    return (info.in_channels, info.image_size, info.num_classes, *signal)


def split_size(data: DataSpec, split: str) -> int:
    """Samples a job reads of ``split``: its subset, at most the split's size."""
    full = SPLIT_SIZES.get(data.name, {}).get(split, UNKNOWN_SPLIT_SIZE)
    subset = data.train_size if split == "train" else data.test_size
    return min(full, subset) if subset is not None else full


def net_cost(model: str, args: Mapping[str, Any], shape: Shape) -> NetCost:
    """A zoo or plugin model's cost with ``args`` for data of ``shape``; its arguments are
    checked first (``check_model_args``), then its builder's own checks run on the meta
    device: anything it refuses is a ``SpecError`` (422) before the job is queued."""
    check_model_args(model, args)
    with _collector_paused():
        return _measured(model, tuple(sorted(args.items())), shape)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """A costing's thousands of short-lived objects (the meta net) are freed by reference
    counting when it returns; with the cyclic collector paused meanwhile they are never
    promoted into its old generation, whose growth sets off full collections of the whole
    server heap (torch's included: 200-250 ms on a loaded 2-core box, every thread paused).
    Another costing running at the same time leaves the collector to the first to end."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def file_cost(path: Path) -> NetCost:
    """A landscape checkpoint whose model this server cannot build (a plugin it lacks):
    float32 parameters from the file's size, two FLOPs per parameter per sample (as a dense
    net); its activations are not known (the upload limit bounds the file)."""
    params = path.stat().st_size // FLOAT_BYTES
    return NetCost(params=params, flops=2 * params, activation_bytes=0)


def onnx_cost(path: Path, shape: Shape) -> NetCost:
    """An ONNX upload, priced by its graph: the FLOPs and intermediate elements the upload
    check bounds (``onnx_file_cost``, from the inferred shapes at the check's batch) per
    sample, the intermediates kept as float32 activations, the initializers as parameters.
    Not its file size: fifty 2048-wide ``MatMul`` nodes fit in a few kilobytes."""
    stat = path.stat()
    return _onnx_measured(str(path), stat.st_size, stat.st_mtime_ns, _sample_shape(shape))


def _sample_shape(shape: Shape) -> tuple[int, ...]:
    channels, size, _, *signal = shape
    return (channels, *(size,) * (signal[0] if signal else 2))


@functools.lru_cache(maxsize=64)
def _onnx_measured(path: str, _size: int, _mtime_ns: int, sample: tuple[int, ...]) -> NetCost:
    """Cached by the file's size and time as well: an upload's path is its digest, but a
    file replaced in place must not keep an old price."""
    from landscape.sources.onnx_import import onnx_file_cost

    cost = onnx_file_cost(path, sample_input_shape=sample)
    batch = cost["batch"]
    return NetCost(
        params=cost["parameters"],
        flops=-(-cost["flops"] // batch),
        activation_bytes=FLOAT_BYTES * -(-cost["total_elements"] // batch),
    )


def checkpoint_cost(model: str, model_args: Mapping[str, Any], path: Path, shape: Shape) -> NetCost:
    """The net of a checkpoint (``model_args`` as the checkpoint records them, the data set's
    shape included): an ONNX graph by its graph, a landscape checkpoint from its builder when
    this server has one, else by its file."""
    if path.suffix == ".onnx":
        return onnx_cost(path, shape)
    if model not in {info.name for info in list_models()}:
        return file_cost(path)
    return net_cost(model, {k: v for k, v in model_args.items() if k not in SHAPE_KEYS}, shape)


def surface_cost(surface: Surface, checkpoint: Path, shape: Shape) -> NetCost:
    """The net a surface was computed for (an analysis of it), from the model its file
    records."""
    args = surface.attrs.get("model_args")
    model = str(surface.attrs.get("model", ""))
    return checkpoint_cost(model, args if isinstance(args, dict) else {}, checkpoint, shape)


class _MetaCosting(TorchDispatchMode):  # type: ignore[no-untyped-call]  # torch's own
    """Runs a costing's operations on meta tensors and counts their FLOPs with the formulas of
    ``torch.utils.flop_counter``. Not ``FlopCounterMode`` itself: its module tracker installs
    process-wide module hooks, which would reach the real forward passes of a job worker
    thread of this process. Initializers (random and constant fills, meaningless without
    values) are skipped; and every ``YIELD_EVERY_S`` the thread sleeps a moment so the
    server's other threads get the GIL (a bare release would not hand it over)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.flops = 0
        self._ran_since = time.monotonic()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if time.monotonic() - self._ran_since > YIELD_EVERY_S:
            time.sleep(YIELD_FOR_S)
            self._ran_since = time.monotonic()
        if func in _FILLS:
            return args[0]
        formula = flop_registry.get(func._overloadpacket)
        if formula is None:  # counted through its decomposition, as FlopCounterMode does
            with self:
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        out = func(*args, **kwargs)
        if formula is not None:
            self.flops += int(formula(*args, **kwargs, out_val=out))
        return out


_FILLS = frozenset(
    {
        torch.ops.aten.normal_.default,
        torch.ops.aten.uniform_.default,
        torch.ops.aten.fill_.Scalar,
        torch.ops.aten.zero_.default,
    }
)


@functools.lru_cache(maxsize=256)
def _measured(model: str, args: tuple[tuple[str, Any], ...], shape: Shape) -> NetCost:
    channels, size, classes, *signal = shape
    dims = signal[0] if signal else 2
    try:
        with torch.device("meta"), _MetaCosting():
            net = build(
                model, in_channels=channels, num_classes=classes, image_size=size,
                spatial_dims=dims, **dict(args),
            )  # fmt: skip
    except LandscapeError:
        raise
    except Exception as exc:  # a builder's own refusal (e.g. heads not dividing d_model)
        raise SpecError(f"model {model!r} cannot be built with {dict(args)}: {exc}") from exc
    weights = {id(p) for p in net.parameters()}
    saved = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        if id(tensor) not in weights:
            saved += tensor.numel() * tensor.element_size()
        return tensor

    batch = 2  # not 1: BatchNorm refuses a single value per channel in training mode
    net.train()
    try:
        with _MetaCosting() as counter, saved_tensors_hooks(pack, _unpacked):
            net(torch.empty((batch, channels, *(size,) * dims), device="meta"))
    except Exception as exc:
        raise SpecError(
            f"cannot estimate the cost of model {model!r}: its forward pass does not run on "
            f"shapes alone ({type(exc).__name__}: {exc})"
        ) from exc
    params = sum(p.numel() for p in net.parameters())
    return NetCost(params, counter.flops // batch, saved // batch)


def _unpacked(tensor: Any) -> Any:
    return tensor


def _data_bytes(samples: int, shape: Shape) -> float:
    channels, size, _, *signal = shape
    return float(samples * channels * size ** (signal[0] if signal else 2) * FLOAT_BYTES)


def arpack_products(k: int, restarts: int | None = None) -> int:
    """Hessian-vector products of one ARPACK run for ``k`` eigenvalues (0 for none): the cap
    the library holds it to (``landscape.analysis.hessian.arpack_cap``), so never more."""
    return arpack_cap(k, restarts)


def arpack_expected(k: int) -> int:
    """The products one ARPACK run for the ``k`` largest eigenvalues is expected to make:
    ``ARPACK_EXPECTED_RESTARTS`` restarts (one, the fewest ``maxiter`` allows, so never more
    than its cap). The budgets still count the cap (``arpack_products``); only the time
    estimate counts this."""
    return arpack_cap(k, ARPACK_EXPECTED_RESTARTS)


def training(net: NetCost, samples: int, epochs: int, batch: int, optimizer: str) -> Work:
    """FLOPs: TRAIN_FACTOR forwards per sample and epoch. Memory: weights, gradients and the
    optimizer's state (SGD's momentum, Adam's two moments) in float32, and one batch's saved
    activations with their gradients."""
    state = 2 if optimizer == "adam" else 1
    return Work(
        flops=float(TRAIN_FACTOR * net.flops * samples * epochs),
        memory_bytes=float(FLOAT_BYTES * net.params * (2 + state))
        + 2.0 * net.activation_bytes * batch,
    )


def evaluation(net: NetCost, points: int, samples: int, directions: int) -> Work:
    """A surface: one forward over the samples per grid point. Memory: the weights, the
    perturbed copy and the directions, and one batch's activations."""
    return Work(
        flops=float(points) * net.flops * samples,
        memory_bytes=float(FLOAT_BYTES * net.params * (directions + 2))
        + float(net.activation_bytes * EVAL_BATCH),
    )


def hessian_products(
    net: NetCost, samples: int, products: int, basis: int, expected: int | None = None
) -> Work:
    """``products`` Hessian-vector products over the samples at most, ``expected`` of them
    expected (None: all). Memory: weights, gradient, product and probe in float32, the
    Lanczos basis (``basis`` float64 vectors) and one batch's forward and backward graphs
    (kept for the double backward)."""
    per_product = float(HVP_FACTOR) * net.flops * samples
    return Work(
        flops=per_product * products,
        memory_bytes=float(net.params * (4 * FLOAT_BYTES + basis * BASIS_BYTES))
        + 3.0 * net.activation_bytes * min(samples, HESSIAN_BATCH),
        expected_flops=None if expected is None else per_product * expected,
    )


def gradients(net: NetCost, samples: int, count: int) -> Work:
    """``count`` full-data gradients (gradient flow: at initialization and trained)."""
    return Work(
        flops=float(count * TRAIN_FACTOR * net.flops * samples),
        memory_bytes=float(3 * FLOAT_BYTES * net.params)
        + 2.0 * net.activation_bytes * min(samples, FLOW_BATCH),
    )


def principal_directions(net: NetCost, snapshots: int) -> Work:
    """PCA of a trajectory: ``PCA_BYTES`` per parameter per snapshot, besides the weights;
    FLOPs of the thin SVD of a snapshots × parameters matrix (about 4·n·k², Golub & Van
    Loan §5.4.5), small beside the surface's."""
    return Work(
        flops=4.0 * net.params * snapshots**2,
        memory_bytes=float(net.params * (PCA_BYTES * snapshots + FLOAT_BYTES)),
    )


def _with_data(work: Work, samples: int, shape: Shape) -> Work:
    """The data set's tensors are in memory for the whole part."""
    return dataclasses.replace(work, memory_bytes=work.memory_bytes + _data_bytes(samples, shape))


def explore_samples(estimate: EstimateSpec, size: int) -> int:
    """Samples one point of a split of ``size`` is expected to read for ``estimate``: the
    ladder size (``first_stage·2^(k/4)``, then N) its target is expected to be met at, so
    never fewer than the first stage nor more than N."""
    if estimate.relative:
        need = EXPLORE_SAMPLES_AT_5_PERCENT * (0.05 / estimate.target) ** 2
    else:
        need = (2.0 * EXPLORE_ABSOLUTE_SPREAD / estimate.target) ** 2
    return int(round_up(np.asarray([need]), ladder(size, estimate.first_stage))[0])


def surface_estimate(
    spec: SurfaceSpec,
    train: TrainSpec | None,
    net: NetCost,
    shape: Shape,
    explore: EstimateSpec | None = None,
    remaining: int | None = None,
) -> Estimate:
    """A surface job: training its zoo model when ``train`` is given (not yet cached), the
    directions (``hessian``: at most ``max_lanczos_steps`` Lanczos steps, each keeping a basis
    vector, and one residual product per eigenvector; ``pca``: every snapshot in memory at
    once), then every point: a full pass each, or
    (``explore``) the centre's full pass and the samples the target is expected to need.
    ``remaining``: making an estimated surface exact, only the samples it has not read."""
    samples = sum(split_size(spec.data, split) for split in spec.splits)
    if remaining is not None:
        work = evaluation(net, 1, remaining, spec.grid.ndim)
        return Estimate("exact pass", (("exact", _with_data(work, samples, shape)),), net.params)
    parts: list[tuple[str, Work]] = []
    if train is not None:
        n = split_size(train.data, "train")
        work = training(net, n, train.epochs, train.batch_size, train.optimizer)
        parts.append(("training", _with_data(work, n, shape)))
    ndim = spec.grid.ndim
    if spec.directions.kind == "hessian":
        n = split_size(spec.data, spec.splits[0])
        steps = spec.directions.max_lanczos_steps
        work = hessian_products(net, n, steps + spec.grid.ndim, steps)
        parts.append(("directions", _with_data(work, n, shape)))
    if spec.directions.kind == "pca":
        parts.append(("directions", principal_directions(net, len(spec.directions.trajectory))))
    if explore is not None:
        per_point = sum(explore_samples(explore, split_size(spec.data, s)) for s in spec.splits)
        centre = evaluation(net, 1, samples, ndim)
        parts.append(("centre", _with_data(centre, samples, shape)))
        work = evaluation(net, spec.grid.n_points, per_point, ndim)
        parts.append(("estimate", _with_data(work, samples, shape)))
        return Estimate("estimated surface", tuple(parts), net.params)
    work = evaluation(net, spec.grid.n_points, samples, ndim)
    parts.append(("surface", _with_data(work, samples, shape)))
    return Estimate("surface", tuple(parts), net.params)


def hessian_estimate(spec: AnalysisSpec, map_points: int, net: NetCost, shape: Shape) -> Estimate:
    """A Hessian analysis: ARPACK for the top and bottom eigenvalues, Hutchinson probes, the
    density's fixed-step Lanczos runs, and one run per curvature-map point (fixed steps, or
    ARPACK for both ends)."""
    per_point = spec.curvature_steps or arpack_products(2, spec.maxiter)
    fixed = spec.trace_samples + spec.density_probes * spec.density_steps + map_points * per_point
    bottom = arpack_products(spec.bottom, spec.maxiter)  # the small end converges slowly
    products = arpack_products(spec.top, spec.maxiter) + bottom + fixed
    expected = arpack_expected(spec.top) + bottom + fixed
    basis = max(
        krylov(spec.top) if spec.top else 0,
        krylov(spec.bottom) if spec.bottom else 0,
        spec.density_steps if spec.density_probes else 0,
        (spec.curvature_steps or krylov(2)) if map_points else 0,
    )
    n = split_size(spec.data, spec.split)
    work = _with_data(hessian_products(net, n, products, basis, expected), n, shape)
    return Estimate("Hessian analysis", (("Hessian products", work),), net.params)


def flow_estimate(data: DataSpec, net: NetCost, shape: Shape) -> Estimate:
    """Gradient flow: one full-data gradient at initialization, one trained."""
    n = split_size(data, "train")
    work = _with_data(gradients(net, n, 2), n, shape)
    return Estimate("gradient flow", (("gradients", work),), net.params)


def sharpness_estimate(data: DataSpec, net: NetCost, shape: Shape, snapshots: int) -> Estimate:
    """Sharpness: one ARPACK run for λmax per snapshot, at most its product cap
    (``SharpnessOptions.product_cap``; warm starts converge in one or two restarts)."""
    n = split_size(data, "train")
    options = SharpnessOptions()
    products = snapshots * options.product_cap
    work = _with_data(hessian_products(net, n, products, options.krylov), n, shape)
    return Estimate("sharpness", (("Hessian products", work),), net.params)


def report_estimate(spec: ReproduceSpec, nets: Mapping[str, NetCost], shape: Shape) -> Estimate:
    """A report: every net's trainings, then for its first ``surface_seeds`` seeds a surface
    per range and the analyses (gradient flow; top eigenvalues, density, curvature map and
    λmax at each training snapshot on ``hessian_samples`` images)."""
    n = split_size(spec.data, "train")
    h = min(spec.hessian_samples, n)
    train, surfaces, analyses = Work(0.0, 0.0), Work(0.0, 0.0), Work(0.0, 0.0)
    for model in spec.models:
        net = nets[model]
        step = training(net, n, spec.epochs, spec.batch_size, "sgd")
        train = _sum(train, step, len(spec.seeds))
        for _half, points in spec.ranges:
            surfaces = _sum(surfaces, evaluation(net, points * points, n, 2), spec.surface_seeds)
        snapshots = spec.sharpness_points + 2 if spec.sharpness_points else 0  # 0, …, end
        fixed = spec.slq_probes * spec.slq_steps + spec.curvature_points**2 * spec.curvature_steps
        sharpness = SharpnessOptions()
        products = arpack_products(spec.top_eigenvalues) + fixed + snapshots * sharpness.product_cap
        expected = (
            arpack_expected(spec.top_eigenvalues)
            + fixed
            + snapshots * arpack_cap(1, ARPACK_EXPECTED_RESTARTS, ncv=sharpness.krylov)
        )
        basis = max(krylov(spec.top_eigenvalues), spec.slq_steps, spec.curvature_steps)
        hessian = hessian_products(net, h, products, basis, expected)
        flow = gradients(net, n, 2)
        both = Work(
            hessian.flops + flow.flops,
            max(hessian.memory_bytes, flow.memory_bytes),
            hessian.timed_flops + flow.flops,
        )
        analyses = _sum(analyses, both, spec.surface_seeds)
    parts = tuple(
        (name, _with_data(work, n, shape))
        for name, work in (("trainings", train), ("surfaces", surfaces), ("analyses", analyses))
    )
    return Estimate("report", parts, max(net.params for net in nets.values()))


def _sum(total: Work, work: Work, times: int) -> Work:
    """``times`` runs of ``work`` one after another: FLOPs add up, memory is the largest."""
    return Work(
        total.flops + times * work.flops,
        max(total.memory_bytes, work.memory_bytes),
        total.timed_flops + times * work.timed_flops,
    )
