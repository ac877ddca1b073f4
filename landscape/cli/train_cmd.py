"""``landscape train``: build a ``TrainSpec`` from arguments, train, draw a progress bar."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, get_args

from landscape.cli.data_args import add_data_arguments, data_spec_from_args
from landscape.cli.spec_args import loss_from_args, parse_model_args
from landscape.cli.wording import choices_text
from landscape.errors import SpecError
from landscape.specs import (
    DeviceName,
    LossName,
    OptimizerName,
    ScheduleName,
    TrainSpec,
    check_choice,
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``train``; choices are checked by the spec, so errors read the same everywhere."""
    defaults = TrainSpec(model="resnet20")
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "train",
        help="train a zoo model (or your own) and write a checkpoint",
        description="Train a zoo model (or your --model-factory's) on a data set and write a "
        "checkpoint (resumable: rerun the same command after an interruption to continue).",
    )
    parser.add_argument("--model", default=None, help="zoo model name, e.g. resnet56-noshort")
    parser.add_argument(
        "--model-factory",
        default=None,
        metavar="PKG.MOD:FN",
        help="your own architecture, trained with the same recipe: a callable taking "
        "in_channels, num_classes, image_size (and --model-arg values) and returning an "
        "nn.Module; run from the folder holding the module (docs/models.md)",
    )
    add_data_arguments(parser)
    parser.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="builder argument, e.g. depth=8 or width=64 for the MLPs (repeatable)",
    )
    parser.add_argument("--out", required=True, type=Path, help="checkpoint file to write")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="with --optimizer gd: number of full-batch steps (one step is one epoch of gd)",
    )
    parser.add_argument("--lr", type=float, default=defaults.lr, help="step size η")
    parser.add_argument(
        "--optimizer",
        default=defaults.optimizer,
        help=choices_text(OptimizerName, {"gd": "full-batch gradient descent, no momentum"}),
    )
    parser.add_argument("--momentum", type=float, default=defaults.momentum)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument(
        "--loss",
        default=None,
        help=f"loss trained (default cross_entropy): {', '.join(get_args(LossName))} or "
        "another registered name (docs/losses.md)",
    )
    parser.add_argument(
        "--loss-factory", default=None, metavar="MODULE:CALLABLE",
        help="your own loss(model, inputs, targets) returning per-sample losses",
    )  # fmt: skip
    parser.add_argument("--schedule", default=defaults.schedule, help=choices_text(ScheduleName))
    parser.add_argument(
        "--warmup-epochs", type=int, default=0, help="epochs at lr/10 first (He et al. §4.2)"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default=defaults.device, help=choices_text(DeviceName))
    parser.add_argument(
        "--snapshot-every", type=int, default=0, help="save weights every N epochs (0: never)"
    )
    parser.add_argument(
        "--sharpness-every",
        type=int,
        default=0,
        help="λmax of the full-batch training loss every N epochs (gd: steps), kept in the "
        "checkpoint's metadata (0: never)",
    )
    parser.set_defaults(func=run)
    return parser


def spec_from_args(args: argparse.Namespace) -> TrainSpec:
    """The one place arguments become a spec."""
    check_choice("optimizer", args.optimizer, OptimizerName)
    check_choice("schedule", args.schedule, ScheduleName)
    check_choice("device", args.device, DeviceName)
    data = data_spec_from_args(args)
    epochs = args.epochs
    if args.steps is not None:
        if args.optimizer != "gd":
            raise SpecError(
                f"--steps counts full-batch steps of --optimizer gd; with {args.optimizer!r} "
                "use --epochs"
            )
        epochs = args.steps
    return TrainSpec(
        model=model_name(args),
        data=data,
        model_args=parse_model_args(args.model_arg),
        epochs=epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        loss=loss_from_args(args),
        schedule=args.schedule,
        warmup_epochs=args.warmup_epochs,
        seed=args.seed,
        device=args.device,
        snapshot_every=args.snapshot_every,
        sharpness_every=args.sharpness_every,
    )


def model_name(args: argparse.Namespace) -> str:
    """The zoo name, or the factory registered under its own ``pkg.mod:fn`` for this process,
    so the recipe trains it like any zoo model and the checkpoint records the factory's name
    and arguments (it holds weights only: the factory's code rebuilds the module)."""
    if (args.model is None) == (args.model_factory is None):
        raise SpecError("give one of --model (a zoo model) or --model-factory (your own code)")
    if args.model is not None:
        return str(args.model)
    from landscape.models import list_models, register_model
    from landscape.sources.factory import build_from_factory, load_factory

    name = str(args.model_factory)
    factory = load_factory(name)
    if name not in {info.name for info in list_models()}:

        def builder(**kwargs: Any) -> Any:
            return build_from_factory(factory, name, **kwargs)

        register_model(name, f"--model-factory {name} (your code)")(builder)
    return name


def run(args: argparse.Namespace) -> int:
    from landscape.cli.progress import open_bar
    from landscape.train import train_model

    spec = spec_from_args(args)
    unit = "step" if spec.optimizer == "gd" else "epoch"
    with open_bar(spec.epochs, f"train {spec.model}", unit=unit, delay=1.0) as bar:

        def on_epoch(record: dict[str, Any]) -> None:
            bar.n = record["epoch"]
            bar.set_postfix(
                loss=f"{record['train_loss']:.4f}",
                acc=f"{record['train_acc']:.3f}",
                test_acc=f"{record['test_acc']:.3f}",
            )

        metadata = train_model(spec, args.out, on_epoch=on_epoch)
    print(
        f"wrote {args.out}: train loss {metadata['train_loss']:.4f}, "
        f"train acc {metadata['train_acc']:.4f}, test loss {metadata['test_loss']:.4f}, "
        f"test acc {metadata['test_acc']:.4f} ({metadata['wall_time_s']:.1f} s on "
        f"{metadata['device']})"
    )
    if args.model_factory is not None:
        import json

        given = parse_model_args(args.model_arg)
        rebuild = f" --model-args '{json.dumps(given)}'" if given else ""
        print(
            f"  {args.out} holds weights only (the factory's name and arguments recorded); "
            f"its surface: landscape surface --checkpoint {args.out} --model-factory "
            f"{args.model_factory}{rebuild} --out SURFACE.h5"
        )
    tracked = metadata.get("sharpness") or []
    if tracked:
        first, last = tracked[0], tracked[-1]
        peak = max(r["lambda_max"] for r in tracked)
        print(
            f"sharpness λmax: {first['lambda_max']:.4g} at step {first['step']}, max {peak:.4g}, "
            f"{last['lambda_max']:.4g} at step {last['step']} (2/η = {last['two_over_lr']:.4g}; "
            f"{len(tracked)} measurements in the checkpoint's metadata)"
        )
    return 0
