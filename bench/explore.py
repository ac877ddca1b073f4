"""Exploration mode vs the exact surface: samples, wall time, calibration, make exact.

    python -m bench.explore                 # 21×21 MLP on MNIST-1D (50,000 train, 10,000 test)
    python -m bench.explore --grid 11       # a smaller grid

One run, one trained net, one set of directions: the exact surface (the engine's full pass per
point), then estimates at 5 %, 2 % and 1 % (fitted coefficient, the default), each with
``--seeds`` permutation seeds (every point of one grid reads the same samples, so one grid's
coverage swings with the seed), and at 2 % and 1 % with the plain difference, then the 5 %
estimate made exact. For each: samples evaluated
(every forward of one sample at one point, the centre's pass included), wall time, the
speed-ups over the exact surface (samples of both splits; ``train ×``: of the 50,000-sample
split alone, where the samples a target needs do not shrink with the split), and the
coverage of the stated 95 % intervals (points not read whole, loss and accuracy, both
splits) against the exact values. Last, the same grid on the 50,000-sample split alone, exact
and at 5 % and 2 %.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from landscape import storage as store
from landscape.data import load_dataset
from landscape.engine.plan import cpu_count, cpu_model
from landscape.explore import EstimateSpec
from landscape.specs import DataSpec, EngineOptions, GridSpec, SurfaceSpec, TrainSpec
from landscape.surface import compute_surface
from landscape.train import train_model

METRICS = ("loss", "acc")


def coverage(estimated: store.Surface, exact: store.Surface) -> dict[str, tuple[float, int]]:
    """Per ``{split}_{metric}``: the share of 95 % intervals holding the exact value, over the
    points not read whole, and how many such points there are."""
    state = estimated.estimate
    assert state is not None
    out = {}
    for split, part in state.splits.items():
        sampled = part.n() < part.size
        for metric in METRICS:
            value, se = state.value(split, metric)
            truth = exact.values[f"{split}_{metric}"].ravel()
            inside = np.abs(value - truth) <= part.z * se + 1e-6 * np.abs(truth)
            out[f"{split}_{metric}"] = (
                float(inside[sampled].mean()) if sampled.any() else 1.0,
                int(sampled.sum()),
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="mnist1d")
    parser.add_argument("--grid", type=int, default=21)
    parser.add_argument("--span", type=float, default=1.0, help="grid over ±span")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=3, help="permutation seeds per target")
    args = parser.parse_args(argv)
    print(f"CPU: {cpu_model()}, {cpu_count()} cores usable", flush=True)
    n_train = len(load_dataset(args.dataset, "train")[1])
    n_test = len(load_dataset(args.dataset, "test")[1])
    print(f"data: {args.dataset}, {n_train:,} train + {n_test:,} test samples", flush=True)
    options = EngineOptions(device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = DataSpec(name=args.dataset)
        train = TrainSpec(
            model="mlp-plain",
            data=data,
            epochs=args.epochs,
            optimizer="adam",
            lr=1e-3,
            model_args={"depth": 2, "width": args.width},
            device="cpu",
        )
        began = time.perf_counter()
        meta = train_model(train, folder / "net.pt")
        print(
            f"trained mlp-plain (depth 2, width {args.width}) {args.epochs} epochs in "
            f"{time.perf_counter() - began:.0f} s: train loss {meta['train_loss']:.3f}, "
            f"acc {meta['train_acc']:.3f}; test loss {meta['test_loss']:.3f}, "
            f"acc {meta['test_acc']:.3f}",
            flush=True,
        )
        grid = GridSpec(
            x_range=(-args.span, args.span),
            n_x=args.grid,
            y_range=(-args.span, args.span),
            n_y=args.grid,
        )
        spec = SurfaceSpec(
            checkpoint=str(folder / "net.pt"), data=data, grid=grid, splits=("train", "test")
        )
        points = grid.n_points
        exact_samples = points * (n_train + n_test)
        began = time.perf_counter()
        exact = store.read_surface(compute_surface(spec, folder / "exact.h5", options=options))
        exact_s = time.perf_counter() - began
        print(
            f"\nexact {args.grid}×{args.grid}: {exact_samples:,} samples, {exact_s:.1f} s "
            f"({exact.attrs['engine']['method']}, {exact.attrs['engine']['workers']} workers)"
        )
        header = (
            f"{'estimate':>16} {'samples':>12} {'/point':>7} {'wall s':>7} "
            f"{'samples ×':>9} {'train ×':>7} {'wall ×':>7}  coverage (points estimated)"
        )
        print(header)
        runs = [
            (EstimateSpec(t, seed=seed), f"{t * 100:g}% s{seed}")
            for t in (0.05, 0.02, 0.01)
            for seed in range(args.seeds)
        ]
        runs += [(EstimateSpec(t, method="difference"), f"{t * 100:g}% diff") for t in (0.02, 0.01)]
        five: Path | None = None
        for target, label in runs:
            out = folder / f"{label.replace(' ', '_').replace('%', 'pct')}.h5"
            began = time.perf_counter()
            compute_surface(spec, out, options=options, estimate=target)
            wall = time.perf_counter() - began
            surface = store.read_surface(out)
            samples = int(surface.attrs["engine"]["samples"])
            assert surface.estimate is not None
            train = surface.estimate.splits["train"]  # the split of 50,000: n, centre pass
            train_ratio = points * n_train / (int(train.n().sum()) + n_train)
            cover = coverage(surface, exact)
            text = ", ".join(f"{k} {v:.3f} ({n})" for k, (v, n) in cover.items())
            print(
                f"{label:>16} {samples:>12,} {samples / points:>7,.0f} {wall:>7.1f} "
                f"{exact_samples / samples:>9.1f} {train_ratio:>7.1f} {exact_s / wall:>7.1f}  "
                f"{text}",
                flush=True,
            )
            if label == "5% s0":
                five, five_samples, five_wall = out, samples, wall
        assert five is not None
        _split_alone(spec, folder, options, n_train)
        # the whole shape as the page first draws it: the centre's pass and a first stage at
        # every point (a ±99 % target stops every point there)
        began = time.perf_counter()
        shape_out = folder / "first_stage.h5"
        compute_surface(spec, shape_out, options=options, estimate=EstimateSpec(0.99))
        shape_s = time.perf_counter() - began
        first_stage = int(store.read_surface(shape_out).attrs["engine"]["samples"])
        print(
            f"\nwhole shape after the first stage: {first_stage:,} samples "
            f"({exact_samples / first_stage:.0f}× fewer than exact), {shape_s:.1f} s "
            f"(1/{exact_s / shape_s:.0f} of the exact surface's time)"
        )
        began = time.perf_counter()
        compute_surface(spec, five, options=options, make_exact=True)
        make_s = time.perf_counter() - began
        made = store.read_surface(five)
        more = int(made.attrs["engine"]["samples"])
        loss_rel = max(
            float(np.max(np.abs(made.values[m] - exact.values[m]) / np.abs(exact.values[m])))
            for m in spec.metric_names
            if m.endswith("_loss")
        )
        flips = max(
            float(np.max(np.abs(made.values[m] - exact.values[m])))
            * (n_train if m.startswith("train") else n_test)
            for m in spec.metric_names
            if m.endswith("_acc")
        )
        print(
            f"make exact after 5%: {more:,} more samples, {make_s:.1f} s; estimate + exact "
            f"= {(five_samples + more) / exact_samples:.3f}× the exact surface's samples, "
            f"{(five_wall + make_s) / exact_s:.2f}× its wall time; against the exact surface: "
            f"losses within {loss_rel:.1e} relative, accuracies within {flips:.0f} sample(s) "
            f"(float32 logits summed in another order by the exact engine, "
            f"{exact.attrs['engine']['method']}: a near-tie's argmax may flip)"
        )
    return 0


def _split_alone(spec: SurfaceSpec, folder: Path, options: EngineOptions, n_train: int) -> None:
    """The same grid on the 50,000-sample split alone: what a target saves where the samples
    it needs are a small share of the split (a 10,000-sample split caps the saving lower)."""
    alone = dataclasses.replace(spec, splits=("train",))
    points = alone.grid.n_points
    began = time.perf_counter()
    compute_surface(alone, folder / "train_exact.h5", options=options)
    exact_s = time.perf_counter() - began
    print(f"\ntrain split alone: exact {points * n_train:,} samples, {exact_s:.1f} s")
    for target in (0.05, 0.02):
        out = folder / f"train_{target}.h5"
        began = time.perf_counter()
        compute_surface(alone, out, options=options, estimate=EstimateSpec(target))
        wall = time.perf_counter() - began
        samples = int(store.read_surface(out).attrs["engine"]["samples"])
        print(
            f"{target * 100:>15g}% {samples:>12,} {samples / points:>7,.0f} {wall:>7.1f} "
            f"{points * n_train / samples:>9.1f} {'':>7} {exact_s / wall:>7.1f}",
            flush=True,
        )


if __name__ == "__main__":
    raise SystemExit(main())
