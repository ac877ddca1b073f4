"""``landscape interpolate``: loss and accuracy on the straight line between two checkpoints,
and its barrier, optionally with BN statistics re-estimated at each point and the second
net's units first aligned to the first's (docs/interpolation.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, get_args

from landscape.cli.data_args import add_data_arguments, data_spec_from_args
from landscape.cli.wording import FIELD_FLAGS, PRECISION_NOTES, choices_text, in_user_words
from landscape.specs import DeviceName, LossName, Precision, Split

BN_NOTES = {"eval": "interpolated running statistics", "recompute": "re-estimated at each t"}
ALIGN_NOTES = {"weights": "weight matching, Ainsworth et al. 2022"}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from landscape.analysis.interpolate import AlignMode, BnMode

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "interpolate",
        help="loss along the straight line between two checkpoints, and its barrier",
        description="Evaluate (1−t)·θ₁ + t·θ₂ on a grid of t for two checkpoints of one "
        "architecture and report the barrier: the highest loss on 0 ≤ t ≤ 1 minus the mean "
        "of the two ends' losses (and the accuracy's dip below its ends' mean).",
    )
    parser.add_argument("checkpoint", help="θ₁, at t = 0")
    parser.add_argument("target", help="θ₂, at t = 1 (same model and arguments)")
    parser.add_argument("--out", type=Path, required=True, help="HDF5 file to write")
    parser.add_argument("--points", type=int, default=21, help="points on the t grid")
    parser.add_argument(
        "--range", nargs=2, type=float, default=(0.0, 1.0), metavar=("MIN", "MAX"),
        help="t range; must put 0 and 1 on the grid (default 0 1)",
    )  # fmt: skip
    parser.add_argument("--bn", default="eval", help=choices_text(BnMode, BN_NOTES))
    parser.add_argument("--bn-subset", type=int, default=1000, help="training samples for --bn")
    parser.add_argument("--bn-seed", type=int, default=0, help="which training samples")
    parser.add_argument("--align", default="none", help=choices_text(AlignMode, ALIGN_NOTES))
    parser.add_argument(
        "--splits", nargs="+", default=["train", "test"], help=choices_text(Split, last="and")
    )
    parser.add_argument(
        "--loss", default="cross_entropy",
        help=f"loss name (default cross_entropy): {', '.join(get_args(LossName))}, or any "
        "landscape.losses resolves (docs/losses.md)",
    )  # fmt: skip
    add_data_arguments(parser)
    parser.add_argument("--device", default="auto", help=choices_text(DeviceName))
    parser.add_argument(
        "--precision", default="auto", help=choices_text(Precision, PRECISION_NOTES)
    )
    parser.add_argument("--workers", type=int, default=None, help="CPU worker processes")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Errors name the flags and paths as typed (``landscape.cli.wording``)."""
    flags = {**FIELD_FLAGS, "n_t": "--points", "t_range": "--range", "bn_subset": "--bn-subset"}
    with in_user_words([args.checkpoint, args.target, args.out], flags):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from landscape.analysis.interpolate import InterpolationSpec, compute_interpolation
    from landscape.cli.progress import step_bar
    from landscape.specs import EngineOptions, check_choice
    from landscape.storage.interpolation import read_interpolation

    for split in args.splits:
        check_choice("split", split, Split)
    spec = InterpolationSpec(
        checkpoint=args.checkpoint,
        target=args.target,
        data=data_spec_from_args(args),
        t_range=(float(args.range[0]), float(args.range[1])),
        n_t=args.points,
        splits=tuple(dict.fromkeys(args.splits)),
        loss=args.loss,
        bn=args.bn,
        bn_subset=args.bn_subset,
        bn_seed=args.bn_seed,
        align=args.align,
    )
    options = EngineOptions(device=args.device, precision=args.precision, workers=args.workers)
    bar = step_bar(args.quiet, "interpolate")
    out = compute_interpolation(
        spec, args.out, options=options, on_progress=lambda done, total: bar(done, total)
    )
    result = read_interpolation(out)
    if args.json:
        print(
            json.dumps(
                {
                    "t": result.t.tolist(),
                    "values": {k: v.tolist() for k, v in result.values.items()},
                    "barriers": result.barriers,
                    "unaligned_barriers": result.unaligned_barriers,
                    "settings": result.settings,
                },
                indent=2,
            )
        )
        return 0
    metrics = list(result.values)
    settings = result.settings
    print(f"{Path(args.checkpoint).name} (t=0) → {Path(args.target).name} (t=1), bn {spec.bn}")
    print("  " + f"{'t':>6}" + "".join(f" {m:>11}" for m in metrics))
    for i, t in enumerate(result.t):
        print("  " + f"{t:>6.3f}" + "".join(f" {result.values[m][i]:>11.4g}" for m in metrics))
    print("barrier (loss: max − mean of ends; acc: mean of ends − min), 0 ≤ t ≤ 1:")
    before = result.unaligned_barriers
    for m in metrics:
        line = f"  {m:<11} {result.barriers[m]:.4g}"
        if before is not None:
            line = f"  {m:<11} {before[m]:.4g} before alignment, {result.barriers[m]:.4g} after"
        print(line)
    if settings.get("bn") == "recompute" and not settings.get("bn_layers"):
        print("no BatchNorm layers: --bn recompute changes nothing here")
    elif settings.get("bn") == "recompute":
        print(
            f"BN statistics of {settings.get('bn_layers', 0)} layers re-estimated on "
            f"{settings.get('bn_subset_used', 0)} training samples (seed {spec.bn_seed})"
        )
    print(f"  file: {out}")
    return 0
