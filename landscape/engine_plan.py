"""How the engine splits its work on a device: batch size, grid points per call, workers.

Measured choices (``bench/surface.py`` reproduces them): on CPU one grid point per call with
cache-sized batches; on CUDA the whole split resident and as many points per call as memory
allows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from landscape.specs import EngineOptions

Data = Mapping[str, tuple[Tensor, Tensor]]

_CPU_ACTIVATION_BYTES = 2**20  # largest activation per batch: about one core's L2 (measured)


def cpu_count() -> int:
    """Cores this process may use (a container's CPU set, not the host's core count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def configure_cuda(options: EngineOptions) -> None:
    """cuDNN autotuning pays for itself over hundreds of identical-shape calls; TF32 only
    when asked (``precision="tf32"``: ~1e-3 relative error, off by default)."""
    torch.backends.cudnn.benchmark = True
    tf32 = options.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


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


def pick_batch_size(module: nn.Module, data: Data, device: torch.device) -> int:
    """CPU: the largest activation of a batch about cache-sized (measured best for 32×32
    inputs, bench/surface.py); CUDA: the whole split, capped by memory."""
    n_max = max(x.shape[0] for x, _ in data.values())
    per_sample = activation_bytes_per_sample(module, data)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(max(1, min(n_max, free // (16 * per_sample))))
    return int(max(16, min(n_max, _CPU_ACTIVATION_BYTES // per_sample)))


def pick_points_per_call(
    module: nn.Module, data: Data, batch_size: int, device: torch.device
) -> int:
    """CPU: 1 (batching grid points does not pay there, bench/surface.py). CUDA: as many as fit in
    half the free memory, counting ~4 live activations per sample and a copy of the weights."""
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    per_sample = activation_bytes_per_sample(module, data)
    weights = sum(p.numel() * 4 for p in module.parameters())
    per_point = 4 * per_sample * batch_size + 2 * weights
    return int(max(1, min(64, (free // 2) // per_point)))


# CPU cost model for torch.compile, measured on a 2-core x86-64 CPU (resnet20 on digits,
# BN folded, tiny convs dense, batch 256): compiling saves ~12 % per point in one process
# (0.074 vs 0.084 s, timed interleaved) and ~25 % with two single-thread workers running
# side by side (bench, workers' malloc tuned: 0.037 vs 0.048–0.051 s/point), and costs ~5 s
# per worker with inductor's on-disk cache warm (10–15 s cold, on a busy machine). A 21×21
# resnet20 surface (~220 points per worker) is then break-even (~23–25 s either way) and stays
# eager; bigger nets or grids compile. Per-core fp32 rate for the per-point estimate.
_CPU_COMPILE_SAVING = 0.25
_CPU_COMPILE_S = 6.0
_CPU_FLOPS_PER_CORE = 80e9
_MIN_COMPILE_FLOP = 1e9  # forward work per grid point below which compiling cannot pay
DEFAULT_POINTS = 21 * 21  # the grid assumed when the caller does not say how many points


def forward_flops(module: nn.Module, data: Data) -> float:
    """Forward FLOPs of one grid point: one pass over every split, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    x = next(iter(data.values()))[0][:1].to("cpu", torch.float32)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        module(x)
    n_samples = sum(x_split.shape[0] for x_split, _ in data.values())
    return float(counter.get_total_flops() * n_samples)


def compile_pays(
    module: nn.Module,
    data: Data,
    device: torch.device | None = None,
    *,
    n_points: int | None = None,
    workers: int = 1,
) -> bool:
    """Whether torch.compile saves more time than it costs over the points to evaluate.

    On CPU: compile when the estimated saving per worker (``points / workers × seconds per
    point × saving``) exceeds the compile time, ``n_points`` defaulting to a 21×21 grid.
    Elsewhere (CUDA): compile unless the net is under ~1 GFLOP per point.
    """
    flops = forward_flops(module, data)
    if device is None or device.type != "cpu":
        return flops >= _MIN_COMPILE_FLOP
    points_per_worker = (n_points or DEFAULT_POINTS) / max(1, workers)
    saving_s = points_per_worker * flops / _CPU_FLOPS_PER_CORE * _CPU_COMPILE_SAVING
    return bool(saving_s > _CPU_COMPILE_S)
