"""``landscape sharpness``: λmax of the full-batch training loss at each snapshot of a run.

Cohen et al. 2021's edge of stability, read off a trajectory: under gradient descent with step
η the top Hessian eigenvalue rises until about 2/η, then hovers there. The table shows λmax per
snapshot, warm-started along the trajectory, with 2/η where the run was constant-step gd
(docs/sharpness.md). ``landscape train --sharpness-every N`` tracks the same during training.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from landscape.cli.wording import PRECISION_NOTES, choices_text
from landscape.errors import SpecError
from landscape.specs import DataSpec, DeviceName, LossName, Precision


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sharpness",
        help="λmax (top Hessian eigenvalue) of the training loss along a trajectory",
        description="Measure λmax of the mean training loss at every snapshot (Lanczos on "
        "Hessian-vector products, each warm-started from the previous eigenvector), in step "
        "order, beside 2/η of a constant-step gradient-descent run (Cohen et al. 2021).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--trajectory",
        nargs="+",
        type=Path,
        metavar="SNAPSHOT",
        help="checkpoints of one run, e.g. run.snapshots/*.pt",
    )
    source.add_argument(
        "--history",
        type=Path,
        metavar="CHECKPOINT",
        help="show what `landscape train --sharpness-every` tracked into a checkpoint, or "
        "what a landscape.monitor.Monitor wrote into its run file (.h5)",
    )
    parser.add_argument(
        "--dataset", default=None, help="data set name or file (default: the run's)"
    )
    parser.add_argument("--data-root", default=None, help="folder holding torchvision data sets")
    parser.add_argument("--train-size", type=int, default=None, help="keep a fixed subset")
    parser.add_argument(
        "--loss", default=None, help=choices_text(LossName) + " (default: the run's)"
    )
    parser.add_argument("--krylov", type=int, default=12, help="Lanczos basis per restart")
    parser.add_argument("--tol", type=float, default=1e-4, help="relative accuracy of λmax")
    parser.add_argument("--device", default="auto", help=choices_text(DeviceName))
    parser.add_argument(
        "--precision",
        default="auto",
        help=choices_text(Precision, PRECISION_NOTES),
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--html", type=Path, default=None, help="also write the figure (λmax, 2/η, loss)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from landscape.analysis.sharpness import SharpnessOptions, trajectory_sharpness
    from landscape.cli.progress import step_bar
    from landscape.specs import DeviceName, LossName, Precision, check_choice

    check_choice("device", args.device, DeviceName)
    check_choice("precision", args.precision, Precision)
    if args.history is not None:
        measuring = [f for f, v in (("--dataset", args.dataset), ("--train-size",
                     args.train_size), ("--loss", args.loss)) if v is not None]  # fmt: skip
        if measuring:
            raise SpecError(
                f"{', '.join(measuring)} set how snapshots are measured (--trajectory); "
                "--history shows what was recorded"
            )
        records, what = tracked_history(args.history), f"tracked in {args.history.name}"
    else:
        if args.loss is not None:
            check_choice("loss of sharpness", args.loss, LossName)
        data = None
        if args.dataset is not None or args.train_size is not None:
            data = DataSpec(
                name=args.dataset or "digits", data_root=args.data_root, train_size=args.train_size
            )
        records = trajectory_sharpness(
            args.trajectory,
            data,
            loss=args.loss,
            device=args.device,
            precision=args.precision,
            options=SharpnessOptions(krylov=args.krylov, tol=args.tol),
            on_progress=step_bar(args.quiet, "sharpness"),
        )
        what = f"along {len(records)} snapshots, in {records[0]['precision']}"
    if args.html is not None:
        from landscape.plot.sharpness import write_sharpness_html

        write_sharpness_html(records, args.html, title=f"sharpness {what}")
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    print(f"λmax of the mean training loss {what}")
    print(f"  {'step':>6}  {'snapshot':<24} {'λmax':>10} {'2/η':>8} {'loss':>10}")
    for r in records:
        two = f"{2.0 / r['lr']:.4g}" if r.get("lr") else "—"
        step = "?" if r["step"] is None else str(r["step"])
        name = r.get("path", "")
        print(f"  {step:>6}  {name:<24} {r['lambda_max']:>10.4g} {two:>8} {r['loss']:>10.4g}")
    if args.html is not None:
        print(f"  figure: {args.html}")
    return 0


def tracked_history(checkpoint: Path) -> list[dict[str, Any]]:
    """The ``sharpness`` records of a checkpoint's metadata or of a monitor's run file; a
    clear error when it has none."""
    from landscape.monitor.run_file import is_run_file, read_run
    from landscape.sources.checkpoint import load_checkpoint

    if is_run_file(checkpoint):
        tracked = read_run(checkpoint).sharpness
        if not tracked:
            raise SpecError(f"{checkpoint} holds no λmax; monitor with measure=('lambda_max',)")
        return tracked

    _, metadata = load_checkpoint(checkpoint)
    records = metadata.get("sharpness")
    if not records:
        raise SpecError(
            f"{checkpoint} holds no tracked sharpness; train it with --sharpness-every N"
        )
    return list(records)
