"""``landscape gradient-flow``: per-layer gradient norms of a checkpoint, at initialization and
trained, optionally stored as its surface file's ``gradient_flow/`` group (docs/format.md).

The table shows ``‖∂L/∂W‖`` per layer, input first, and the input-to-output ratio of each, in
words made from the number (``grows 286× toward the input``, ``flat within 2×``): whether a
net's gradient fades or explodes toward the input is measured, not assumed. For
a recurrent net a second table shows ``‖∂L/∂h_t‖`` per time step, first row first, and the
ratio of the first quarter of steps to the last (Bengio et al. 1994's vanishing gradient).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from landscape.cli.data_args import add_analysis_source_arguments, check_sizes
from landscape.cli.wording import PRECISION_NOTES, choices_text, in_user_words, require_file
from landscape.errors import SpecError
from landscape.specs import DataSpec, DeviceName, Precision, Split


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "gradient-flow",
        help="per-layer gradient norms at initialization and trained",
        description="Measure ‖∂L/∂W‖ and ‖∂L/∂W‖/‖W‖ for every conv/linear layer, input to "
        "output, of the mean training loss at a checkpoint and at the initialization its "
        "training started from (for recurrent nets also ‖∂L/∂h_t‖ per time step); with "
        "--surface, store them in that file's gradient_flow/ group.",
    )
    add_analysis_source_arguments(parser)
    parser.add_argument("--split", default="train", help=choices_text(Split))
    parser.add_argument("--mode", default="train", help="BN in train (batch stats) or eval mode")
    parser.add_argument("--batch-size", type=int, default=128, help="samples per pass")
    parser.add_argument("--device", default="auto", help=choices_text(DeviceName))
    parser.add_argument(
        "--precision",
        default="auto",
        help=choices_text(Precision, PRECISION_NOTES),
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Errors name the flags and paths as typed (``landscape.cli.wording``)."""
    with in_user_words([args.checkpoint, args.surface]):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from landscape.analysis.flow_analyze import analyze_gradient_flow
    from landscape.analysis.gradient_flow import Mode
    from landscape.cli.progress import step_bar
    from landscape.report.findings import flow_phrase
    from landscape.specs import Precision, Split, check_choice

    if args.checkpoint is None and args.surface is None:
        raise SpecError("name a --checkpoint (or a --surface whose checkpoint to use)")
    check_choice("split", args.split, Split)
    check_choice("gradient flow mode", args.mode, Mode)
    check_choice("precision", args.precision, Precision)
    check_sizes(args)
    checkpoint = args.checkpoint
    if args.surface is not None:
        require_file(args.surface, "surface file")
    if checkpoint is None:
        from landscape.storage import read_surface

        checkpoint = read_surface(args.surface).spec.checkpoint
    require_file(checkpoint, "checkpoint" if args.checkpoint else "the surface's checkpoint")
    data = None
    if args.dataset is not None or args.train_size is not None:
        data = DataSpec(
            name=args.dataset or "digits", data_root=args.data_root, train_size=args.train_size
        )
    flows = analyze_gradient_flow(
        checkpoint,
        data,
        args.surface,
        split=args.split,
        mode=args.mode,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        on_progress=step_bar(args.quiet, "gradient flow"),
    )
    if args.json:
        print(json.dumps({k: f.to_dict() for k, f in flows.items()}, indent=2))
        return 0
    init, trained = flows["init"], flows["trained"]
    print(
        f"gradient flow of the mean loss ({trained.n_samples} samples) at {Path(checkpoint).name}"
        f", in {trained.settings['precision']}"
    )
    print(f"  {'depth':>5}  {'layer':<32} {'‖∂L/∂W‖ init':>14} {'‖∂L/∂W‖ trained':>16}")
    rows = zip(trained.depth, trained.names, init.grad_norm, trained.grad_norm, strict=True)
    for depth, layer, g0, g1 in rows:
        print(f"  {depth:>5}  {layer:<32} {g0:>14.4g} {g1:>16.4g}")
    ratios = init.input_to_output_ratio(), trained.input_to_output_ratio()
    print(
        f"  input/output gradient ratio: init {ratios[0]:.3g} ({flow_phrase(ratios[0])}), "
        f"trained {ratios[1]:.3g} ({flow_phrase(ratios[1])})"
    )
    if init.time_grad_norm is not None and trained.time_grad_norm is not None:
        print(f"  {'step':>5}  {'':<32} {'‖∂L/∂h_t‖ init':>14} {'‖∂L/∂h_t‖ trained':>16}")
        steps = zip(init.time_grad_norm, trained.time_grad_norm, strict=True)
        for step, (g0, g1) in enumerate(steps, start=1):
            print(f"  {step:>5}  {'':<32} {g0:>14.4g} {g1:>16.4g}")
        print(
            f"  first/last steps gradient ratio: init {init.through_time_ratio():.3g}, "
            f"trained {trained.through_time_ratio():.3g}"
        )
    if args.surface is not None:
        print(f"  stored in {args.surface}:gradient_flow/", file=sys.stdout)
    return 0
