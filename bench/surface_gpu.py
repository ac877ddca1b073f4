"""The GPU benchmark: the paper's workload shape — ResNet-56 on 50,000 CIFAR-shaped 3×32×32
samples (random values, no download) — naive loop vs the engine in each precision.

    python -m bench.surface --device cuda              # a few minutes on one H100/H200
    python -m bench.surface --device cuda --points 4 --samples 10000   # quicker

Everything is measured in one run on one GPU: the naive loop (the original tool's method:
weights copied per point, batch 128, data resident, PyTorch's default cuDNN TF32), the engine
per precision (compile and K choice reported, not counted per point), TFLOP/s, % of the bf16
matmul peak measured in the same run, the projected 51×51 time, and each precision's max
relative error of the loss against the engine in strict fp32 on the same points.
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.workloads import randomize_bn
from landscape.directions import make_directions
from landscape.engine.evaluator import GridEvaluator, reference_evaluate
from landscape.engine.plan import cpu_count, cpu_model
from landscape.models import build
from landscape.specs import DirectionSpec, EngineOptions

PRECISIONS = ("fp32", "tf32", "bf16")


@dataclass
class Row:
    label: str
    s_per_point: float
    points: int
    prepare_s: float
    max_rel_err: float | None
    detail: str


def bf16_matmul_peak(device: torch.device, seconds: float = 1.0) -> float:
    """FLOP/s of a large bf16 matmul on ``device``: the tensor cores' practical peak."""
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    torch.cuda.synchronize(device)
    return 2 * n**3 * count / (time.perf_counter() - start)


def flops_per_point(model: nn.Module, x: torch.Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x[:1].cpu())
    return float(counter.get_total_flops() * x.shape[0])


def synthetic_data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=generator)
    y = torch.randint(0, 10, (n,), generator=generator)
    return x, y


def time_naive(
    model: nn.Module, dirs: list[Any], coords: np.ndarray, data: Any, device: torch.device
) -> tuple[float, dict[str, np.ndarray]]:
    """The original tool's loop with PyTorch's default CUDA settings (cuDNN TF32 on)."""
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
    gpu_model = model.to(device)
    gpu_dirs = [{k: v.to(device) for k, v in d.items()} for d in dirs]
    gpu_data = {s: (x.to(device), y.to(device)) for s, (x, y) in data.items()}
    reference_evaluate(gpu_model, gpu_dirs, coords[:1], gpu_data)  # warm-up
    start = time.perf_counter()
    values = reference_evaluate(gpu_model, gpu_dirs, coords, gpu_data)
    seconds = (time.perf_counter() - start) / len(coords)
    model.cpu()
    return seconds, values


def time_engine(
    model: nn.Module,
    dirs: list[Any],
    coords: np.ndarray,
    data: Any,
    options: EngineOptions,
    n_grid: int,
) -> tuple[float, float, dict[str, np.ndarray], dict[str, Any]]:
    start = time.perf_counter()
    with GridEvaluator(model, dirs, data, options=options, n_points=n_grid) as ev:
        prepare_s = time.perf_counter() - start
        ev.evaluate(coords[:1])  # first call: allocator and cuDNN autotuning
        start = time.perf_counter()
        values = ev.evaluate(coords)
        seconds = (time.perf_counter() - start) / len(coords)
        info = ev.describe()
    return seconds, prepare_s, values, info


def max_rel_err(got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> float:
    return float(np.max(np.abs(got["train_loss"] - ref["train_loss"]) / np.abs(ref["train_loss"])))


def run(args: argparse.Namespace, device: torch.device) -> list[Row]:
    x, y = synthetic_data(args.samples)
    model = randomize_bn(build(args.model, in_channels=3, num_classes=10, image_size=32))
    dirs, _ = make_directions(model, DirectionSpec(seed=0), 2)
    data = {"train": (x, y)}
    coords = np.random.default_rng(0).uniform(-1, 1, size=(args.points, 2))
    flops = flops_per_point(model, x)
    peak = bf16_matmul_peak(device) if device.type == "cuda" else float("nan")  # CPU: smoke
    n_grid = args.grid * args.grid
    print(
        f"{args.model}, {args.samples} samples 3×32×32 (random), {flops / 1e12:.2f} TFLOP per "
        f"grid point; bf16 matmul peak measured now: {peak / 1e12:.0f} TFLOP/s",
        flush=True,
    )
    rows: list[Row] = []
    naive_s, naive_values = time_naive(model, dirs, coords[: args.naive_points], data, device)
    rows.append(Row("naive loop (batch 128)", naive_s, args.naive_points, 0.0, None, ""))
    print_row(rows[-1], flops, peak, naive_s, args.grid, header=True)
    strict: dict[str, np.ndarray] | None = None
    for precision in args.precisions:
        options = EngineOptions(
            device=device.type,  # type: ignore[arg-type]
            precision=precision,
            devices=(device.index or 0,) if device.type == "cuda" else None,
            compile=not args.no_compile,
            points_per_call=args.points_per_call,
        )
        seconds, prepare_s, values, info = time_engine(model, dirs, coords, data, options, n_grid)
        if precision == "fp32":
            strict = values
        err = max_rel_err(values, strict) if strict is not None else None
        detail = (
            f"{info['method']}, K={info['points_per_call']} ({info['points_per_call_reason']}), "
            f"batch {info['batch_size']}, compile {info['timings']['compile_s']:.0f} s"
        )
        rows.append(Row(f"engine {precision}", seconds, len(coords), prepare_s, err, detail))
        print_row(rows[-1], flops, peak, naive_s, args.grid, header=False)
    if strict is not None:
        err = max_rel_err({"train_loss": naive_values["train_loss"]}, {
            "train_loss": strict["train_loss"][: args.naive_points]
        })  # fmt: skip
        print(f"naive loop vs engine fp32: max relative error {err:.1e}")
    return rows


def print_row(
    row: Row, flops: float, peak: float, naive_s: float, side: int, *, header: bool
) -> None:
    if header:
        print(
            f"{'configuration':<24} {'s/point':>8} {'(pts)':>5} {'TFLOP/s':>8} {'% bf16 pk':>9} "
            f"{'× naive':>7} {f'{side}² min':>8} {'max rel err':>11} {'prep s':>6}  how"
        )
    rate = flops / row.s_per_point
    minutes = (row.s_per_point * side * side + row.prepare_s) / 60
    err = "" if row.max_rel_err is None else f"{row.max_rel_err:.1e}"
    print(
        f"{row.label:<24} {row.s_per_point:>8.3f} {row.points:>5} {rate / 1e12:>8.1f} "
        f"{100 * rate / peak:>8.1f}% {naive_s / row.s_per_point:>6.1f}× {minutes:>8.1f} "
        f"{err:>11} {row.prepare_s:>6.0f}  {row.detail}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet56")
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--points", type=int, default=6, help="grid points timed per engine")
    parser.add_argument("--naive-points", type=int, default=2, help="grid points timed naively")
    parser.add_argument("--grid", type=int, default=51, help="side of the projected grid")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--points-per-call", type=int, default=None, help="default: timed")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--gpu", type=int, default=0, help="which CUDA device")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("the GPU benchmark needs CUDA; run `python -m bench.surface` on CPU")
    device = torch.device("cuda", args.gpu)
    print(
        f"GPU: {torch.cuda.get_device_name(device)} ({torch.cuda.device_count()} visible); "
        f"torch {torch.__version__}, CUDA {torch.version.cuda}; CPU: {cpu_model()}, "
        f"{cpu_count()} cores; {platform.platform()}",
        flush=True,
    )
    run(args, device)
    print(
        "naive: reference_evaluate (weights copied per point, DataLoader batch 128, data on "
        "the GPU, PyTorch defaults); engine: GridEvaluator on one GPU, prepare (BN folding, "
        "K trial, compile) excluded per point and added once to the projected grid time; "
        "max rel err: loss vs the engine in strict fp32 on the same points."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
