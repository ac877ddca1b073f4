"""Surface engine vs the naive per-point loop, and vs the machine's FLOP floor.

    python -m bench.surface            # resnet20, resnet56, resnet56-noshort, mlp; 21×21 grid
    python -m bench.surface --quick    # fewer points, resnet20 and the MLP only
    python -m bench.surface --device cuda   # the GPU benchmark (bench.surface_gpu)

Everything is measured in one run on the same model, data and directions, so ratios hold on a
noisy shared machine even when absolute times drift. The naive baseline (DataLoader batch
128, weights copied in per point: the original tool's method) is timed on a subset of points
and extrapolated to the grid; the table says how many points each rate rests on.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.surface_gpu import main as gpu_main
from bench.workloads import randomize_bn
from landscape.data import load_dataset
from landscape.directions import make_directions
from landscape.engine.evaluator import GridEvaluator, reference_evaluate
from landscape.engine.plan import cpu_count, cpu_model
from landscape.models import build
from landscape.specs import DirectionSpec, EngineOptions

WORKLOADS = {
    "resnet20": {"name": "resnet20"},
    "resnet56": {"name": "resnet56"},
    "resnet56-noshort": {"name": "resnet56-noshort"},
    "mlp": {"name": "mlp-residual"},
}


@dataclass
class Row:
    workload: str
    gflop_per_point: float
    naive_s: float
    naive_points: int
    naive_1t_s: float
    engine_s: float
    engine_points: int
    prepare_s: float
    compile_s: float
    floor_s: float
    method: str


def peak_flops(seconds: float = 0.7) -> tuple[float, str]:
    """The best fp32 rate of large matmuls and channels_last convs, all threads: the floor."""
    best, what = 0.0, ""
    cases = []
    for n in (1024, 2048, 3072):
        a, b = torch.randn(n, n), torch.randn(n, n)
        cases.append((f"matmul {n}²", lambda a=a, b=b: a @ b, 2 * n**3))
    for ch, hw in ((64, 32), (128, 16), (256, 8)):
        conv = nn.Conv2d(ch, ch, 3, padding=1, bias=False).eval()
        conv = conv.to(memory_format=torch.channels_last)
        x = torch.randn(64, ch, hw, hw).contiguous(memory_format=torch.channels_last)
        flops = 2 * ch * ch * 9 * 64 * hw * hw
        cases.append((f"conv {ch}ch 3×3 {hw}²", lambda conv=conv, x=x: conv(x), flops))
    with torch.inference_mode():
        for label, fn, flops in cases:
            fn()
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                fn()
                n += 1
            rate = flops * n / (time.perf_counter() - start)
            if rate > best:
                best, what = rate, label
    return best, what


def forward_flops(model: nn.Module, x: torch.Tensor) -> float:
    """Forward FLOPs of one pass over ``x`` (one grid point), counted by torch."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    return float(counter.get_total_flops())


def grid(n: int) -> np.ndarray:
    """A ``n × n`` grid over [-1, 1]², row-major over y then x."""
    axis = np.linspace(-1, 1, n)
    xx, yy = np.meshgrid(axis, axis)
    return np.stack([xx.ravel(), yy.ravel()], axis=1)


def run_workload(
    label: str,
    model_name: str,
    data: tuple[torch.Tensor, torch.Tensor],
    args: argparse.Namespace,
    peak: float,
) -> Row:
    x, y = data
    model = randomize_bn(
        build(model_name, in_channels=x.shape[1], num_classes=10, image_size=x.shape[-1])
    )
    dirs, _ = make_directions(model, DirectionSpec(seed=0), 2)
    flops = forward_flops(model, x)
    coords = grid(args.grid)
    rng = np.random.default_rng(0)
    naive_idx = rng.choice(len(coords), size=min(args.naive_points, len(coords)), replace=False)
    split = {"train": (x, y)}
    reference_evaluate(model, dirs, coords[:1], split)  # warm-up: allocator, oneDNN primitives
    start = time.perf_counter()
    reference_evaluate(model, dirs, coords[naive_idx], split)
    naive_s = (time.perf_counter() - start) / len(naive_idx)
    # the same loop on one thread: on a loaded machine OpenMP's 2 threads can lose badly,
    # which would flatter the engine; the table reports the ratio to the better of the two
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        reference_evaluate(model, dirs, coords[naive_idx[: max(1, len(naive_idx) // 2)]], split)
        naive_1t_s = (time.perf_counter() - start) / max(1, len(naive_idx) // 2)
    finally:
        torch.set_num_threads(threads)
    options = EngineOptions(device="cpu", compile=not args.no_compile, workers=args.workers)
    points = coords if args.engine_points is None else coords[: args.engine_points]
    n_points = 10**9 if args.force_compile else len(coords)
    start = time.perf_counter()
    # the engine is told the whole grid's size: its compile decision is the one for a surface
    with GridEvaluator(model, dirs, split, options=options, n_points=n_points) as ev:
        prepare_s = time.perf_counter() - start
        chunks = np.array_split(points, max(1, len(points) // args.chunk))
        start = time.perf_counter()
        for _ in ev.imap(chunks):
            pass
        info = ev.describe()
        # on CPU the workers compile after timing their first points (side by side): the
        # per-point rate excludes that one-off cost, listed in its own column
        wall = time.perf_counter() - start - info["timings"]["compile_s"]
        engine_s = wall / len(points)
    return Row(
        workload=f"{label} ({model_name})",
        gflop_per_point=flops / 1e9,
        naive_s=naive_s,
        naive_points=len(naive_idx),
        naive_1t_s=naive_1t_s,
        engine_s=engine_s,
        engine_points=len(points),
        prepare_s=prepare_s,
        compile_s=info["timings"]["compile_s"],
        floor_s=flops / peak,
        method=f"{info['method']}, {info['workers']} proc, bs {info['batch_size']}, "
        f"BN folded {info['bn_folded']}",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer points and workloads")
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=None)
    parser.add_argument("--grid", type=int, default=21, help="grid side (default 21)")
    parser.add_argument("--naive-points", type=int, default=None, help="points timed naively")
    parser.add_argument("--engine-points", type=int, default=None, help="default: whole grid")
    parser.add_argument("--chunk", type=int, default=32, help="grid points per imap chunk")
    parser.add_argument("--workers", type=int, default=None, help="CPU processes (default: cores)")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="cuda: the GPU benchmark"
    )
    parser.add_argument(
        "--force-compile",
        action="store_true",
        help="compile even where the engine's cost model says it does not pay for this grid",
    )
    args, rest = parser.parse_known_args(argv)
    if args.device == "cuda":
        return gpu_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.workloads is None:
        args.workloads = ["resnet20", "mlp"] if args.quick else list(WORKLOADS)
    if args.naive_points is None:
        args.naive_points = 4 if args.quick else 12
    if args.quick and args.engine_points is None:
        args.engine_points = 64
    x, y = load_dataset("digits", "train")
    peak, peak_what = peak_flops()
    print(f"CPU: {cpu_model()}, {cpu_count()} cores usable", flush=True)
    print(
        f"load average (1/5/15 min): {', '.join(f'{v:.1f}' for v in os.getloadavg())}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; data: digits train "
        f"{tuple(x.shape)}; grid {args.grid}×{args.grid}; floor rate {peak / 1e9:.0f} GFLOP/s "
        f"({peak_what}, measured now)",
        flush=True,
    )
    rows = []
    for label in args.workloads:
        rows.append(run_workload(label, WORKLOADS[label]["name"], (x, y), args, peak))
        print_row(rows[-1], header=len(rows) == 1)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"load average at the end (1/5/15 min): {load} on {os.cpu_count()} CPUs", flush=True)
    print()
    for row in rows:
        print(f"{row.workload}: {row.method}")
    print(
        "naive: reference_evaluate (DataLoader batch 128, weights copied per point), timed on "
        "the points shown and extrapolated per point ('naive 1thr': the same on one thread, "
        "half the points; 'vs best': engine vs the faster naive); engine: GridEvaluator over "
        "the points "
        "shown, compile/prepare time excluded (listed separately, included in the 21² grid "
        "time); floor = forward FLOPs ÷ floor rate."
    )
    return 0


def print_row(row: Row, *, header: bool) -> None:
    if header:
        print(
            f"{'workload':<30} {'GFLOP/pt':>8} {'naive s/pt':>10} {'(pts)':>5} "
            f"{'engine s/pt':>11} {'(pts)':>5} {'naive pt/s':>10} {'engine pt/s':>11} "
            f"{'speedup':>7} {'naive 1thr':>10} {'vs best':>7} {'floor s/pt':>10} "
            f"{'% floor':>7} {'prep s':>6} {'compile s':>9} {'21² grid s':>10}"
        )
    print(
        f"{row.workload:<30} {row.gflop_per_point:>8.2f} {row.naive_s:>10.3f} "
        f"{row.naive_points:>5} "
        f"{row.engine_s:>11.4f} {row.engine_points:>5} {1 / row.naive_s:>10.2f} "
        f"{1 / row.engine_s:>11.2f} {row.naive_s / row.engine_s:>6.2f}× "
        f"{row.naive_1t_s:>10.3f} {min(row.naive_s, row.naive_1t_s) / row.engine_s:>6.2f}× "
        f"{row.floor_s:>10.4f} "
        f"{100 * row.floor_s / row.engine_s:>6.0f}% {row.prepare_s:>6.1f} {row.compile_s:>9.1f} "
        f"{row.engine_s * 441 + row.prepare_s + row.compile_s:>10.1f}",
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
