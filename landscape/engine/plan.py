"""How the engine splits its work on a device: precision, batch size, grid points per call,
whether torch.compile pays, worker processes and the devices they run on.

Measured choices (``docs/performance.md``): on CPU fp32, one grid point per call with
cache-sized batches and one single-threaded process per core; on CUDA TF32 by default, the
whole split resident, one process per visible GPU, and the points per call timed per workload.
On both, compile when the measured eager time per point × the points left × the saving of the
device and precision exceeds the compile's cost (``COMPILE_COST``).
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from landscape.engine.precision import resolve
from landscape.errors import SpecError
from landscape.specs import CompileMode, EngineOptions, ResolvedPrecision

Data = Mapping[str, tuple[Tensor, Tensor]]

_CPU_ACTIVATION_BYTES = 2**20  # largest activation per batch: about one core's L2


def cpu_count() -> int:
    """Cores this process may use (a container's CPU set, not the host's core count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_precision(options: EngineOptions, device: torch.device | str) -> ResolvedPrecision:
    """The precision the engine computes in on ``device`` (``landscape.engine.precision.resolve``:
    ``auto`` is ``tf32`` on CUDA and ``fp32`` elsewhere; ``tf32``/``bf16`` off CUDA are refused)."""
    return resolve(options.precision, device)


def visible_cuda_devices() -> int:
    """GPUs this process may use (``CUDA_VISIBLE_DEVICES`` applies); 0 without CUDA."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def plan_worker_devices(
    device: torch.device,
    options: EngineOptions,
    *,
    n_visible: int | None = None,
    n_cores: int | None = None,
) -> list[str]:
    """The device of each worker process, one entry per process.

    CUDA: one process per GPU in ``options.devices`` (default: every visible one; indices
    count within ``CUDA_VISIBLE_DEVICES``). CPU: ``options.workers`` processes (default one
    per core). ``n_visible``/``n_cores`` stand in for the machine in tests."""
    if device.type == "cuda":
        visible = visible_cuda_devices() if n_visible is None else n_visible
        indices = list(options.devices) if options.devices is not None else list(range(visible))
        if device.index is not None and options.devices is None:
            indices = [device.index]
        bad = [i for i in indices if i >= visible]
        if bad:
            raise SpecError(
                f"devices {bad} not visible: {visible} CUDA device(s) "
                "(indices count within CUDA_VISIBLE_DEVICES)"
            )
        return [f"cuda:{i}" for i in indices] or ["cuda:0"]
    if options.workers is not None:
        return ["cpu"] * max(1, options.workers)
    return ["cpu"] * (cpu_count() if n_cores is None else n_cores)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), for benchmark tables."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


# A candidate K must beat one point per call by this much per point to be kept: run-to-run
# noise of a timed call is a few per cent, so a smaller gain may be none at all.
K_MARGIN = 0.9
K_CANDIDATES = (1, 2, 4, 8)
# One point's pass above this many seconds already fills the device (CIFAR-sized data on a
# GPU, docs/performance.md; ``python -m bench.surface_gpu`` times K there): no trial, K = 1.
K_TRIAL_MAX_S = 0.05


def choose_points_per_call(
    time_per_point: Callable[[int], float], candidates: Sequence[int] = K_CANDIDATES
) -> tuple[int, str]:
    """The grid points per call with the best measured time per point, and why.

    ``time_per_point(k)`` times one call of ``k`` points (after a warm-up) and returns seconds
    per point, or ``math.inf`` when ``k`` points do not fit in memory (no larger K is tried
    then). K = 1 is timed first; when one point alone is slow the device is already full and
    K = 1 is kept without trying more; another K must beat K = 1 by ``K_MARGIN``."""
    t1 = time_per_point(1)
    if t1 > K_TRIAL_MAX_S:
        return 1, f"one point per call takes {t1 * 1e3:.0f} ms: the device is already full"
    timings = {1: t1}
    for k in candidates:
        if k != 1:
            timings[k] = time_per_point(k)
            if math.isinf(timings[k]):
                break
    best = min(timings, key=lambda k: timings[k])
    shown = ", ".join(
        f"K={k}: {t * 1e3:.2f}" if math.isfinite(t) else f"K={k}: out of memory"
        for k, t in timings.items()
    )
    if best != 1 and timings[best] < K_MARGIN * t1:
        return best, f"timed ms/point {shown}"
    return 1, f"timed ms/point {shown}; no K beat K=1 by {100 * (1 - K_MARGIN):.0f} %"


def activation_bytes_per_sample(module: nn.Module, data: Data) -> int:
    """Largest output of any leaf module for one sample (float32), via forward hooks."""
    sizes: list[int] = [1]

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        if isinstance(out, Tensor):
            sizes.append(out[0].numel() * 4 if out.dim() else 4)

    leaves = [m for m in module.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        x = next(iter(data.values()))[0][:1].to("cpu", torch.float32)
        with torch.inference_mode():
            module(x)
    finally:
        for h in handles:
            h.remove()
    return max(max(sizes), x[0].numel() * 4)


def free_cuda_bytes(device: torch.device, *, processes: int = 1) -> int:
    """Bytes new tensors of this process on ``device`` may take: its share of what the driver
    reports free, plus what its caching allocator holds reserved but unused, within the cap
    ``torch.cuda.set_per_process_memory_fraction`` sets.

    ``processes``: the engine's processes that size themselves on this device at once; each
    takes an equal share of the free memory, where each taking all of it made both run out.
    ``mem_get_info`` counts this process's cached blocks as used, so an evaluator made after
    another in the same process (the API's worker), or sizing again after an out-of-memory
    error, would otherwise see less than there is. A fraction set for the process (e.g. one
    half for each of two service workers on one GPU) caps what its allocator may reserve."""
    free, total = torch.cuda.mem_get_info(device)
    reserved = torch.cuda.memory_reserved(device)
    cached = max(0, reserved - torch.cuda.memory_allocated(device))
    share = free // max(1, processes)
    fraction = memory_fraction(device)
    if fraction < 1.0:
        share = min(share, max(0, int(fraction * total) - reserved))
    return int(share + cached)


def memory_fraction(device: torch.device) -> float:
    """The fraction of ``device`` this process's allocator may reserve (1: no cap set; torch
    before 2.8 has no getter)."""
    get_fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)
    try:
        return float(get_fraction(device)) if get_fraction is not None else 1.0
    except RuntimeError:  # no driver: only the sizing arithmetic runs (tests)
        return 1.0


def pick_batch_size(
    module: nn.Module, data: Data, device: torch.device, *, processes: int = 1
) -> int:
    """CPU: the largest activation of a batch about cache-sized (best for 32×32 inputs,
    docs/performance.md); CUDA: the whole split, capped by this process's share of the
    memory (``free_cuda_bytes``)."""
    n_max = max(x.shape[0] for x, _ in data.values())
    per_sample = activation_bytes_per_sample(module, data)
    if device.type == "cuda":
        free = free_cuda_bytes(device, processes=processes)
        return int(max(1, min(n_max, free // (16 * per_sample))))
    return int(max(16, min(n_max, _CPU_ACTIVATION_BYTES // per_sample)))


def max_points_per_call(
    module: nn.Module, data: Data, batch_size: int, device: torch.device, *, processes: int = 1
) -> int:
    """CUDA: how many grid points fit in half this process's share of the free memory,
    counting ~4 live activations per sample and a copy of the weights (the ceiling of the K
    trial). CPU: 1 (batching grid points does not pay there: measured, docs/performance.md)."""
    if device.type != "cuda":
        return 1
    free = free_cuda_bytes(device, processes=processes)
    per_sample = activation_bytes_per_sample(module, data)
    weights = sum(p.numel() * 4 for p in module.parameters())
    per_point = 4 * per_sample * batch_size + 2 * weights
    return int(max(1, min(64, (free // 2) // per_point)))


@dataclass(frozen=True)
class CompileCost:
    """What torch.compile costs on a device type (seconds per split: each split's batch shape
    is its own graph) and the fraction of the eager time per point it saves, by precision."""

    seconds: float
    saving: Mapping[ResolvedPrecision, float]


# CPU, measured on a 2-core machine (resnet20 on digits, BN folded, tiny convs dense, batch
# 256): compiling saves ~12 % per point in one process and ~25 % with two single-thread workers
# side by side, and costs ~5 s per worker with inductor's on-disk cache warm (10–15 s cold).
# CUDA, measured on one H200 (ResNet-56, BN folded, 50,000 CIFAR-shaped samples; the GPU
# section of docs/performance.md, ``python -m bench.surface_gpu``): compiled vs eager saves
# ~11 % per point in fp32, ~30 % in tf32 and ~36 % in bf16; a compile takes 10–30 s per split
# (docs/performance.md: 5–30 s per precision), so 30 s. Before these figures, CUDA compiled any
# net over 1 GFLOP per point up front: a 21×21 resnet20 surface on digits (~1 ms per point
# eager, 0.4 s in all) paid 10–30 s of compile per split to save a tenth of a second.
#
# The per-point time the saving is weighed against is *measured* in each worker (its first
# points eagerly, or on CUDA the K trial), not assumed: a constant rate taken from one machine
# chose eager on another 2-core machine that then reached 55 % of its floor.
COMPILE_COST: dict[str, CompileCost] = {
    "cpu": CompileCost(6.0, {"fp32": 0.25}),
    "cuda": CompileCost(30.0, {"fp32": 0.11, "tf32": 0.30, "bf16": 0.36}),
}
_CPU_SLOW_FLOPS_PER_CORE = 20e9  # a slow core's rate: the optimistic bound of the up-front check
DEFAULT_POINTS = 21 * 21  # the grid assumed when the caller does not say how many points


def compile_after_measuring(
    eager_s_per_point: float,
    points_left: int,
    device_type: str = "cpu",
    precision: ResolvedPrecision = "fp32",
    *,
    splits: int = 1,
) -> tuple[bool, str]:
    """Whether compiling now pays for the ``points_left`` this process will still evaluate,
    given its measured eager time per point, on ``device_type`` in ``precision``; and why,
    with the numbers."""
    cost = COMPILE_COST[device_type]
    saving = cost.saving[precision]
    saving_s = points_left * eager_s_per_point * saving
    compile_s = cost.seconds * splits
    why = (
        f"measured eager {eager_s_per_point * 1e3:.1f} ms/point × {points_left} points left × "
        f"{saving:.0%} saving ({device_type} {precision}) = {saving_s:.1f} s vs ~{compile_s:.0f} s "
        f"compile ({splits} split{'s' if splits != 1 else ''})"
    )
    return saving_s > compile_s, why


def forward_flops(module: nn.Module, data: Data) -> float:
    """Forward FLOPs of one grid point: one pass over every split, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    x = next(iter(data.values()))[0][:1].to("cpu", torch.float32)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        module(x)
    n_samples = sum(x_split.shape[0] for x_split, _ in data.values())
    return float(counter.get_total_flops() * n_samples)


def _cpu_upfront_saving_s(module: nn.Module, data: Data, points_per_worker: float) -> float:
    """The most compiling could save a CPU worker: its points at a slow core's rate."""
    flops = forward_flops(module, data)
    return points_per_worker * flops / _CPU_SLOW_FLOPS_PER_CORE * COMPILE_COST["cpu"].saving["fp32"]


def compile_pays(
    module: nn.Module,
    data: Data,
    device: torch.device,
    *,
    n_points: int | None = None,
    workers: int = 1,
) -> bool:
    """Whether torch.compile *may* save more time than it costs over the points to evaluate:
    the up-front check, before anything is timed.

    CPU: ``False`` for grids too small to pay even on a slow core. CUDA: ``True`` — a GPU's
    eager time per point spans 1 ms to 1 s for these nets, so only the measurement
    (``compile_after_measuring``, after the K trial) can tell."""
    if device.type != "cpu":
        return True
    points_per_worker = (n_points or DEFAULT_POINTS) / max(1, workers)
    return _cpu_upfront_saving_s(module, data, points_per_worker) > COMPILE_COST["cpu"].seconds


def plan_compile(
    option: CompileMode,
    module: nn.Module,
    data: Data,
    device: torch.device,
    *,
    n_points: int | None,
    workers: int,
) -> tuple[CompileMode, str]:
    """What each worker is told, and why: ``"always"`` (compile up front, forced), ``False``
    (stay eager) or ``True`` (time eager points, then ``compile_after_measuring`` decides)."""
    if option == "always":
        return "always", "forced: EngineOptions.compile='always'"
    if not option:
        return False, "off: EngineOptions.compile=False"
    if not compile_pays(module, data, device, n_points=n_points, workers=workers):
        per_worker = (n_points or DEFAULT_POINTS) / max(1, workers)
        saving_s = _cpu_upfront_saving_s(module, data, per_worker)
        return False, (
            f"CPU: {per_worker:.0f} points per worker save at most {saving_s:.1f} s even on a "
            f"slow core, under ~{COMPILE_COST['cpu'].seconds:.0f} s of compile"
        )
    return True, "to be decided on the measured eager time per point"
