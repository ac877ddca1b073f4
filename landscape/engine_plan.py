"""How the engine splits its work on a device: batch size, grid points per call, workers.

Measured choices (``/work/shared/PERF-NOTES.md``): on CPU one grid point per call with
cache-sized batches; on CUDA the whole split resident and as many points per call as memory
allows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from landscape.errors import SpecError
from landscape.specs import EngineOptions

Data = Mapping[str, tuple[Tensor, Tensor]]

_CPU_ACTIVATION_BYTES = 6 * 2**20  # largest activation per batch: cache-sized (PERF-NOTES)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when present; asking for CUDA without it is the caller's error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SpecError("device 'cuda' asked for, but torch.cuda.is_available() is false")
    return torch.device(name)


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
    inputs, PERF-NOTES); CUDA: the whole split, capped by memory."""
    n_max = max(x.shape[0] for x, _ in data.values())
    per_sample = activation_bytes_per_sample(module, data)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(max(1, min(n_max, free // (16 * per_sample))))
    return int(max(16, min(n_max, _CPU_ACTIVATION_BYTES // per_sample)))


def pick_points_per_call(
    module: nn.Module, data: Data, batch_size: int, device: torch.device
) -> int:
    """CPU: 1 (batching grid points does not pay there, PERF-NOTES). CUDA: as many as fit in
    half the free memory, counting ~4 live activations per sample and a copy of the weights."""
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    per_sample = activation_bytes_per_sample(module, data)
    weights = sum(p.numel() * 4 for p in module.parameters())
    per_point = 4 * per_sample * batch_size + 2 * weights
    return int(max(1, min(64, (free // 2) // per_point)))


_MIN_COMPILE_FLOP = 1e9  # forward work per grid point below which compiling cannot pay


def compile_pays(module: nn.Module, data: Data) -> bool:
    """torch.compile costs 10–60 s once and saves ~30 % per point (PERF-NOTES); for nets whose
    forward pass over the data is under ~1 GFLOP, a whole surface takes less than the compile.
    """
    from torch.utils.flop_counter import FlopCounterMode

    x = next(iter(data.values()))[0][:1].to("cpu", torch.float32)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        module(x)
    n_samples = sum(x_split.shape[0] for x_split, _ in data.values())
    return bool(counter.get_total_flops() * n_samples >= _MIN_COMPILE_FLOP)
