"""``landscape surface``: arguments → ``SurfaceSpec`` → ``compute_surface`` with a progress bar.

Rerunning the same command resumes an interrupted surface from its file; Ctrl-C keeps every
finished chunk (the file on disk is the only state).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, get_args

from landscape.cli.data_args import add_data_arguments, data_spec_from_args
from landscape.cli.recipe_cmd import add_recipe_arguments, apply_recipe, check_rebuilt_id
from landscape.cli.spec_args import (
    add_params_argument,
    loss_from_args,
    parse_model_args,
    parse_param_patterns,
)
from landscape.cli.wording import PRECISION_NOTES, choices_text
from landscape.errors import CheckpointError, SpecError
from landscape.sources.modules import FACTORY_HELP
from landscape.specs import (
    MAX_LANCZOS_STEPS,
    BackendName,
    DeviceName,
    DirectionKind,
    DirectionSpec,
    EngineOptions,
    GridSpec,
    HessianEnds,
    Ignore,
    LossName,
    Normalization,
    Precision,
    Split,
    SurfaceSpec,
    check_choice,
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``surface``; names are checked by the specs so errors read the same everywhere."""
    grid, dirs = GridSpec(), DirectionSpec()
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "surface",
        help="compute a loss surface into an HDF5 file (resumable)",
        description="Evaluate loss and accuracy on a grid around a checkpoint along two (or "
        "one) filter-normalized directions and write an HDF5 surface file. Rerun the same "
        "command after an interruption to compute only the missing points.",
    )
    parser.add_argument(
        "--checkpoint", required=True, help="landscape checkpoint, state_dict, or .onnx graph"
    )
    parser.add_argument("--model", default=None, help="zoo model name, for a bare state_dict")
    parser.add_argument(
        "--model-factory", default=None, metavar="MODULE:CALLABLE", help=FACTORY_HELP
    )
    parser.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="builder argument for a bare state_dict, e.g. width=64 (repeatable; as in train)",
    )
    parser.add_argument(
        "--model-args", default=None, help="alias: the builder arguments as one JSON object"
    )
    add_data_arguments(parser)
    parser.add_argument("--out", required=True, type=Path, help="HDF5 surface file to write")
    parser.add_argument(
        "--dim", type=int, default=2, help="1 (curve), 2 (surface) or 3 (volume along x, y, z)"
    )
    parser.add_argument("--grid", type=int, default=grid.n_x, help="points along x")
    parser.add_argument("--grid-y", type=int, default=None, help="points along y (default: --grid)")
    parser.add_argument(
        "--range", nargs="+", default=None, metavar="MIN MAX | auto",
        help=f"x range (and y unless --yrange; default {grid.x_range[0]:g} {grid.x_range[1]:g}); "
        "'auto' with --directions pca: the trajectory's extent × 1.2 on both axes; "
        "three_point: the three nets' extent + 20%% each side (its default)",
    )  # fmt: skip
    parser.add_argument(
        "--yrange", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
        help="y range (default: --range)",
    )  # fmt: skip
    parser.add_argument("--grid-z", type=int, default=None, help="points along z (--dim 3)")
    parser.add_argument(
        "--zrange", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
        help="z range with --dim 3 (default: --range)",
    )  # fmt: skip
    parser.add_argument(
        "--directions",
        default=dirs.kind,
        help=choices_text(
            DirectionKind,
            {
                "hessian": "Hessian eigenvectors (--hessian-ends)",
                "three_point": "the plane through --checkpoint and the two --through",
            },
        ),
    )
    parser.add_argument(
        "--hessian-ends", default=dirs.hessian_ends,
        help=choices_text(HessianEnds, {"max": "x, y = the top two eigenvectors",
                                        "min": "the bottom two (most negative first)",
                                        "max,min": "x = the top, y = the bottom one"}),
    )  # fmt: skip
    parser.add_argument(
        "--normalization", default=dirs.normalization, help=choices_text(Normalization)
    )
    parser.add_argument("--ignore", default=dirs.ignore, help=choices_text(Ignore))
    parser.add_argument("--seed", type=int, default=dirs.seed, help="seed of random directions")
    add_params_argument(parser)
    parser.add_argument(
        "--max-lanczos-steps", type=int, default=dirs.max_lanczos_steps,
        help=f"hessian: at most this many Lanczos steps (≤ {MAX_LANCZOS_STEPS}), fewer once "
        "the eigenvectors converge",
    )  # fmt: skip
    parser.add_argument("--target", default=None, help="second checkpoint (interpolate)")
    parser.add_argument("--trajectory", nargs="+", default=[], help="snapshots (pca)")
    parser.add_argument(
        "--through", nargs="+", default=[], metavar="CHECKPOINT",
        help="three_point: the two other checkpoints of the plane (same architecture)",
    )  # fmt: skip
    parser.add_argument(
        "--splits", nargs="+", default=["train"], help=choices_text(Split, last="and/or")
    )
    parser.add_argument(
        "--loss", default=None,
        help=f"loss name (default cross_entropy): {', '.join(get_args(LossName))}, "
        "label_smoothing_0.1, cross_entropy_l2_0.0005, an installed plugin's (docs/losses.md)",
    )  # fmt: skip
    parser.add_argument(
        "--loss-factory", default=None, metavar="MODULE:CALLABLE",
        help="your own loss: a callable loss(model, inputs, targets) returning per-sample "
        "losses, imported from an installed module or PYTHONPATH",
    )  # fmt: skip
    parser.add_argument("--device", default="auto", help=choices_text(DeviceName))
    parser.add_argument(
        "--precision", default="auto",
        help=choices_text(Precision, PRECISION_NOTES)
        + "; each precision's error vs strict fp32: docs/performance.md",
    )  # fmt: skip
    parser.add_argument(
        "--devices", type=int, nargs="+", default=None, metavar="GPU",
        help="CUDA device indices to use (default: every visible GPU, one process each)",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=None, help="CPU worker processes")
    parser.add_argument("--points-per-call", type=int, default=None, help="grid points per call")
    parser.add_argument("--batch-size", type=int, default=None, help="samples per forward pass")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument(
        "--backend",
        default="local",
        help=choices_text(
            BackendName,
            {"local": "the processes and GPUs of this host", "ray": "chunks as Ray tasks"},
        ),
    )
    parser.add_argument(
        "--ray-address", default=None, help="Ray cluster to join (default: RAY_ADDRESS or local)"
    )
    parser.add_argument(
        "--estimate",
        default=None,
        metavar="TARGET",
        help="exploration mode: each point sampled until its 95%% interval is within TARGET "
        "(5%% of the loss, or an absolute loss like 0.01)",
    )
    parser.add_argument(
        "--estimate-seed", type=int, default=0, help="seed of the shared sample order"
    )
    parser.add_argument(
        "--exact",
        action="store_true",
        help="carry an estimated --out to the exact values, reusing every sample it has",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_recipe_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def spec_from_args(args: argparse.Namespace, checkpoint: str) -> SurfaceSpec:
    """The one place arguments become a spec."""
    for kind, value, literal in (
        ("direction kind", args.directions, DirectionKind),
        ("normalization", args.normalization, Normalization),
        ("ignore", args.ignore, Ignore),
    ):
        check_choice(kind, value, literal)
    for split in args.splits:
        check_choice("split", split, Split)
    if args.dim not in (1, 2, 3):
        raise SpecError(f"--dim must be 1, 2 or 3, got {args.dim}")
    if args.dim != 3 and (args.grid_z is not None or args.zrange is not None):
        raise SpecError(f"--grid-z and --zrange need --dim 3, got --dim {args.dim}")
    x_range = _parse_range(args.range, args.directions)
    z_axis: dict[str, Any] = {}
    if args.dim == 3:
        z_axis = {"z_range": tuple(args.zrange or x_range), "n_z": args.grid_z or args.grid}
    if args.dim == 1:
        if args.grid_y is not None or args.yrange is not None:
            raise SpecError("--grid-y and --yrange make no sense with --dim 1")
        grid = GridSpec(x_range=x_range, n_x=args.grid, y_range=None, n_y=None)
    else:
        grid = GridSpec(
            x_range=x_range,
            n_x=args.grid,
            y_range=tuple(args.yrange or x_range),
            n_y=args.grid_y or args.grid,
            **z_axis,
        )
    directions = DirectionSpec(
        kind=args.directions,
        normalization=args.normalization,
        ignore=args.ignore,
        seed=args.seed,
        target_checkpoint=args.target,
        trajectory=tuple(args.trajectory),
        through_checkpoints=tuple(args.through),
        max_lanczos_steps=args.max_lanczos_steps,
        hessian_ends=args.hessian_ends,
        params=parse_param_patterns(args.params),
    )
    data = data_spec_from_args(args)
    return SurfaceSpec(
        checkpoint=checkpoint,
        data=data,
        grid=grid,
        directions=directions,
        splits=tuple(dict.fromkeys(args.splits)),
        loss=loss_from_args(args),
    )


def _parse_range(values: list[str] | None, kind: str) -> tuple[float, float]:
    """``--range MIN MAX`` as numbers. ``--range auto`` is resolved by ``run`` (it needs the
    PCA of the snapshots, or the three nets' plane) with ``auto_ranges``; until then a
    placeholder keeps the checks. No ``--range``: the grid's default, three_point's auto."""
    if values is None:
        return GridSpec().x_range
    if values == ["auto"]:
        if kind not in ("pca", "three_point"):
            raise SpecError("--range auto needs --directions pca (the trajectory sets the range)")
        return (-1.0, 1.0)
    try:
        low, high = (float(v) for v in values)
    except ValueError:
        raise SpecError(f"--range wants MIN MAX or 'auto', got {' '.join(values)!r}") from None
    return (low, high)


def options_from_args(args: argparse.Namespace) -> EngineOptions:
    check_choice("device", args.device, DeviceName)
    check_choice("precision", args.precision, Precision)
    for name in ("workers", "points_per_call", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SpecError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    return EngineOptions(
        device=args.device,
        precision=args.precision,
        points_per_call=args.points_per_call,
        batch_size=args.batch_size,
        workers=args.workers,
        devices=tuple(args.devices) if args.devices else None,
        compile=not args.no_compile,
        backend=args.backend,
        ray_address=args.ray_address,
    )


def resolve_checkpoint(args: argparse.Namespace) -> str:
    """The checkpoint the spec names: ours as given; a bare state_dict (with ``--model``)
    wrapped once into a landscape checkpoint next to ``--out``, so its model name becomes
    part of the checkpoint bytes and hence of the surface's cache key."""
    from landscape.data import dataset_info
    from landscape.sources.checkpoint import (
        FORMAT,
        file_digest,
        import_checkpoint,
        read_checkpoint_file,
    )

    source = Path(args.checkpoint)
    content = read_checkpoint_file(source)
    if isinstance(content, dict) and content.get("format") == FORMAT:
        if args.model is not None and args.model != content.get("model"):
            raise CheckpointError(
                f"checkpoint {source} holds model {content.get('model')!r}, "
                f"not the requested {args.model!r}"
            )
        return str(source)
    if args.model is None:
        return str(source)  # load_checkpoint explains that a bare state_dict needs --model
    extra = model_args_from(args)
    info = dataset_info(args.dataset, args.data_root)
    model_args = {**info.model_shape(), **extra}
    source_sha = file_digest(source)
    wrapped = args.out.with_name(f"{args.out.stem}.checkpoint.pt")
    if wrapped.exists():
        previous = read_checkpoint_file(wrapped)
        meta = previous.get("metadata", {}) if isinstance(previous, dict) else {}
        if (
            meta.get("source_sha256") == source_sha
            and previous.get("model") == args.model
            and previous.get("model_args") == model_args
        ):
            return str(wrapped)
    import_checkpoint(
        source,
        wrapped,
        model_name=args.model,
        model_args=model_args,
        metadata={"source": source.name, "source_sha256": source_sha},
    )
    return str(wrapped)


def _check_factory_arguments(args: argparse.Namespace) -> None:
    """Check ``--model-factory`` against the other options before any file is read: the
    factory replaces ``--model``, and only random and Hessian directions need no second
    checkpoint."""
    from landscape.sources.factory import load_factory

    if args.model is not None:
        raise SpecError("give --model (a zoo model) or --model-factory (your own code), not both")
    if args.directions not in ("random", "hessian"):
        raise SpecError(
            f"--model-factory takes --directions random or hessian, not {args.directions!r} "
            "(the others read more checkpoints, each of which would need the factory)"
        )
    load_factory(args.model_factory)  # a bad spec fails before the data loads


def model_args_from(args: argparse.Namespace) -> dict[str, int | float | str]:
    """``--model-arg KEY=VALUE`` (as ``landscape train`` spells it), or the ``--model-args
    JSON`` alias."""

    extra: dict[str, int | float | str] = parse_model_args(args.model_arg)
    if args.model_args:
        try:
            extra.update(json.loads(args.model_args))
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            raise SpecError(f"--model-args is not a JSON object: {args.model_args!r}") from exc
    return extra


def run(args: argparse.Namespace) -> int:
    """Errors name the flags and paths as typed (``landscape.cli.wording``)."""
    from landscape.cli.wording import in_user_words

    paths = [args.checkpoint, args.out, args.target, *args.trajectory, *args.through]
    with in_user_words(paths):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from landscape.cli.progress import open_bar
    from landscape.surface import Progress, compute_surface

    options = options_from_args(args)
    spec_from_args(args, args.checkpoint)  # bad values fail before any file is touched
    estimate = estimate_from_args(args)
    if args.model_factory is not None:
        _check_factory_arguments(args)
        checkpoint = args.checkpoint
    elif Path(args.checkpoint).suffix.lower() == ".onnx":
        if args.model is not None:
            raise SpecError("an .onnx file carries its own architecture: drop --model")
        checkpoint = args.checkpoint  # converted and checked by checkpoint_source
    else:
        checkpoint = resolve_checkpoint(args)
    if args.directions == "three_point" and args.dim != 2:
        raise SpecError(f"--directions three_point spans a plane: --dim 2, not {args.dim}")
    if args.directions == "three_point" and args.range in (None, ["auto"]):
        from landscape.surface import plane_ranges_of

        ranges = plane_ranges_of(checkpoint, spec_from_args(args, checkpoint).directions)
        args.range = [str(v) for v in ranges[0]]
        args.yrange = args.yrange or list(ranges[1])
    if args.range == ["auto"]:
        from landscape.surface import auto_ranges

        ranges = auto_ranges(checkpoint, spec_from_args(args, checkpoint).directions, args.dim)
        args.range = [str(v) for v in ranges[0]]
        if args.dim >= 2 and args.yrange is None:
            args.yrange = list(ranges[1])
        if args.dim == 3 and args.zrange is None:
            args.zrange = list(ranges[2])
    spec = spec_from_args(args, checkpoint)
    if args.recipe is not None:  # the recipe sets the spec, its precision and estimate
        spec, options, estimate = apply_recipe(args, checkpoint, options)
    source = None
    if args.model_factory is not None:
        from landscape.sources.model_source import checkpoint_source

        source = checkpoint_source(
            spec, factory=args.model_factory, factory_args=model_args_from(args)
        )
    bar: Any = None

    def on_progress(progress: Progress) -> None:
        nonlocal bar
        if args.quiet:
            return
        desc = "surface" if progress.stage == "grid" else progress.stage
        if bar is not None and bar.desc != desc:  # the directions' Lanczos ended
            bar.close()
            bar = None
        if bar is None:
            unit = "pt" if progress.stage == "grid" else "step"
            bar = open_bar(
                progress.total, desc, unit=unit, initial=progress.done, dynamic_ncols=True
            )
        bar.update(progress.done - bar.n)

    try:
        out = compute_surface(
            spec, args.out, options=options, on_progress=on_progress, source=source,
            estimate=estimate, make_exact=args.exact,
        )  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    from landscape.storage import describe, read_surface

    surface = read_surface(out)
    info = describe(surface)
    if args.recipe is not None:
        check_rebuilt_id(args, info.key)
    wall = info.attrs.get("wall_time_s")
    wall_text = f", {wall:.1f} s computing" if isinstance(wall, (int, float)) else ""
    diverged = f", {info.nonfinite} not finite" if info.nonfinite else ""
    counts = f"{info.done}/{info.total} points{diverged}{wall_text}"
    print(f"{out}: {info.status}, {counts} (id {info.key})")
    if surface.estimate is not None:
        from landscape.storage.estimate import estimate_lines

        for line in estimate_lines(surface.estimate):
            print(f"  {line}")
    return 0


def estimate_from_args(args: argparse.Namespace) -> Any:
    """``--estimate 5%`` / ``0.01`` → ``EstimateSpec``; ``--exact`` alone → None."""
    if args.estimate is None:
        return None
    if args.exact:
        raise SpecError("give --estimate (explore) or --exact (finish an estimate), not both")
    from landscape.explore import parse_target

    return parse_target(args.estimate, seed=args.estimate_seed)
