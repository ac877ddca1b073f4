"""What every step of the GPU check shares: sizes per device, results, the context, and
small helpers."""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the checkout


STEPS = {
    "a": "versions",
    "b": "gpu tests",
    "c": "correctness",
    "d": "six evaluators",
    "e": "host syncs",
    "f": "resnet56",
    "g": "surface",
    "h": "worker pool",
    "i": "service",
    "j": "long-lived worker",
}


PRECISIONS = ("fp32", "tf32", "bf16")


# max relative error of the mean loss vs the CPU reference loop (fp32 on the CPU)
TOLERANCE = {"fp32": 1e-5, "tf32": 2e-3, "bf16": 3e-2}


# max difference of the accuracy (a fraction): samples on a decision boundary may flip
ACC_TOLERANCE = {"fp32": 0.0, "tf32": 1e-2, "bf16": 3e-2}


MEMORY_SLACK = 4 * 2**20  # CUDA bytes still allocated after six evaluators that count as none


GPU_MARK = re.compile(r"\bmark\.gpu\b")


@dataclass(frozen=True)
class Sizes:
    """How big each step is: full on CUDA, small on CPU (the script proving itself in CI)."""

    digits: int  # digits training samples for steps c, d, e, h
    grid: int  # side of the step-g surface
    resnet56_samples: int
    timed_points: int  # step f: points timed after a warm-up point
    speed_precisions: tuple[str, ...]
    pool_chunks: int  # step h: chunks of 3 points
    lifecycle_points: int  # step d/e: n_points the evaluators are told (compile is weighed on it)
    pytest_timeout_s: int
    sync_chunk: int  # step e: points per chunk (one warm-up chunk, two counted)
    service_train_size: int  # step i: digits samples the service trains on and evaluates


CUDA_SIZES = Sizes(
    digits=512, grid=21, resnet56_samples=50_000, timed_points=3,
    speed_precisions=("tf32", "bf16"), pool_chunks=8, lifecycle_points=441,
    pytest_timeout_s=300, sync_chunk=8, service_train_size=512,
)  # fmt: skip


CPU_SIZES = Sizes(
    digits=128, grid=5, resnet56_samples=256, timed_points=1, speed_precisions=("fp32",),
    pool_chunks=6, lifecycle_points=25, pytest_timeout_s=60, sync_chunk=2,
    service_train_size=128,
)  # fmt: skip


class Skip(Exception):
    """A step (or cell) that cannot run here; the message says why."""


@dataclass
class Result:
    status: str = "pass"  # pass | fail | skip
    summary: str = ""
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # sub-rows: label, status, text
    warnings: list[dict[str, Any]] = field(default_factory=list)  # raised while the step ran


@dataclass
class Context:
    args: argparse.Namespace
    device: Any  # torch.device
    sizes: Sizes
    out: Path
    tmp: Path

    @property
    def cuda(self) -> bool:
        return bool(self.device.type == "cuda")

    def options(self, **kwargs: Any) -> Any:
        """EngineOptions on this run's device: one GPU (``--gpu``), or in-process on CPU."""
        from landscape.specs import EngineOptions

        if self.cuda:
            kwargs.setdefault("devices", (self.device.index or 0,))
        else:
            kwargs.setdefault("workers", 1)
        return EngineOptions(device=self.device.type, **kwargs)


# -- helpers --------------------------------------------------------------------------------
def na(value: Any) -> Any:
    return "n/a" if value is None else value


def mib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.1f} MiB"


def gib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


def compiled_flag(info: dict[str, Any]) -> tuple[bool | None, str]:
    """Whether the compiled path ran: ``describe()["compiled"]``, else read from ``method``."""
    if "compiled" in info:
        return bool(info["compiled"]), "describe.compiled"
    if "method" in info:
        return str(info["method"]).endswith("compile"), "describe.method"
    return None, "n/a"


def max_rel_err(got: dict[str, Any], ref: dict[str, Any], key: str = "train_loss") -> float:
    import numpy as np

    return float(np.max(np.abs(got[key] - ref[key]) / np.maximum(np.abs(ref[key]), 1e-30)))


def max_abs_diff(got: dict[str, Any], ref: dict[str, Any], key: str = "train_acc") -> float:
    import numpy as np

    return float(np.max(np.abs(got[key] - ref[key])))


def acc_tolerance(precision: str, n_samples: int) -> float:
    return max(ACC_TOLERANCE[precision], 2.01 / n_samples)  # ≤ 2 flipped samples always


def make_net(name: str, in_channels: int, image_size: int, seed: int = 0) -> Any:
    """A zoo network with trained-looking BN statistics (so BN folding does real work)."""
    import torch

    from landscape.models import build

    torch.manual_seed(seed)
    model = build(name, in_channels=in_channels, num_classes=10, image_size=image_size)
    return trained_looking_bn(model, seed + 1)


def trained_looking_bn(model: Any, seed: int) -> Any:
    """``model`` in eval mode with random BN running statistics, as training leaves them
    (fresh ones, mean 0 and variance 1, would make BN folding an identity)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=generator) - 0.5)
                m.running_var.copy_(
                    0.5 + 1.5 * torch.rand(m.running_var.shape, generator=generator)
                )
    return model.eval()


def digits_setup(n: int, seed: int = 0) -> tuple[Any, list[Any], dict[str, Any]]:
    """resnet20 on ``n`` digits training samples, two filter-normalized random directions."""
    from landscape.data import load_dataset
    from landscape.directions import make_directions
    from landscape.specs import DirectionSpec

    model = make_net("resnet20", 1, 8, seed)
    x, y = load_dataset("digits", "train", size=n)
    dirs, _ = make_directions(model, DirectionSpec(seed=seed), 2)
    return model, dirs, {"train": (x, y)}


def coords(n: int, seed: int = 0) -> Any:
    """The centre, then ``n - 1`` points uniform in [-1, 1]²."""
    import numpy as np

    rest = np.random.default_rng(seed).uniform(-1, 1, size=(n - 1, 2))
    return np.vstack([np.zeros((1, 2)), rest])


def synchronize(ctx: Context) -> None:
    if ctx.cuda:
        import torch

        torch.cuda.synchronize(ctx.device)


def allocated(ctx: Context) -> int | None:
    if not ctx.cuda:
        return None
    import torch

    synchronize(ctx)
    return int(torch.cuda.memory_allocated(ctx.device))


def collect(ctx: Context) -> None:
    gc.collect()
    synchronize(ctx)


def forced_compile() -> tuple[Any, str]:
    """``"always"`` if ``EngineOptions(compile="always")`` constructs, else ``None`` and why."""
    from landscape.specs import EngineOptions

    try:
        EngineOptions(compile="always")  # type: ignore[arg-type]
    except Exception as exc:
        return None, f"EngineOptions(compile='always') refused: {exc}"[:200]
    return "always", ""


def dynamo_counts() -> dict[str, int]:
    from torch._dynamo.utils import counters

    def count(group: str, key: str) -> int:
        return int(counters[group][key]) if group in counters else 0

    return {
        "frames": count("frames", "total"),  # frames dynamo compiled (first time or again)
        "graphs": count("stats", "unique_graphs"),
        "fx_cache_hits": count("inductor", "fxgraph_cache_hit"),
        "fx_cache_misses": count("inductor", "fxgraph_cache_miss"),
        # guard failures that compiled again (newer torch counts them here; else 0)
        "recompiles": int(sum(counters["recompiles"].values())) if "recompiles" in counters else 0,
    }


def version_of(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "n/a"


def driver_version(index: int) -> str:
    """The NVIDIA driver: nvidia-smi, else /proc/driver/nvidia/version, else the CUDA driver
    API version (libcuda's cuDriverGetVersion)."""
    smi = shutil.which("nvidia-smi")
    if smi:
        with contextlib.suppress(Exception):
            out = subprocess.run(
                [smi, "--query-gpu=driver_version", "--format=csv,noheader", "-i", str(index)],
                capture_output=True,
                text=True,
                timeout=20,
            )
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[0]
    with contextlib.suppress(OSError):
        text = Path("/proc/driver/nvidia/version").read_text()
        found = re.search(r"Kernel Module\s+(\S+)", text)
        if found:
            return found.group(1)
    with contextlib.suppress(Exception):
        import ctypes

        libcuda = ctypes.CDLL("libcuda.so.1")
        version = ctypes.c_int()
        if libcuda.cuDriverGetVersion(ctypes.byref(version)) == 0:
            return f"CUDA driver API {version.value // 1000}.{version.value % 1000 // 10}"
    return "n/a"


def evaluate_cell(
    ctx: Context, model: Any, dirs: list[Any], data: dict[str, Any], points: Any, **options: Any
) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Values and ``describe()`` of one GridEvaluator over ``points``, and its seconds."""
    from landscape.engine.evaluator import GridEvaluator

    start = time.perf_counter()
    with GridEvaluator(
        model, dirs, data, options=ctx.options(**options), n_points=len(points)
    ) as ev:
        got = ev.evaluate(points)
        info = ev.describe()
    return got, info, time.perf_counter() - start
