"""``landscape reproduce skip-vs-plain``: the residual-learning story end to end, one report.

Trains each net of each pair with and without shortcuts under the recipe of docs/reproduce.md
(defaults of ``ReproduceSpec``), measures surfaces, curvature, spectra and gradient flow, and
writes ``report.json`` and an offline ``report.html`` into ``--out``. Everything is cached
there: a rerun reuses finished work and an interrupted one resumes. ``--family`` picks whose
identity path is on trial (ResNet shortcuts by default; highway gates, the Transformer's
residual stream, the LSTM's and GRU's gates through time), ``--quick`` the smaller recipe.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, get_args

from landscape.cli.wording import choices_text
from landscape.errors import SpecError, UnknownNameError
from landscape.specs import DataSpec, DeviceName, Precision

STORIES = ("skip-vs-plain",)


def _typed(value: Any, inner: str = ":") -> str:
    """A recipe value as it is typed on the command line: ``0 1 2``, ``0.25:31 1:21``."""
    if isinstance(value, tuple):
        return " ".join(
            inner.join(_typed(v) for v in item) if isinstance(item, tuple) else _typed(item)
            for item in value
        )
    return f"{value:g}" if isinstance(value, float) else str(value)


def recipe_help() -> dict[str, str]:
    """Each recipe option's help with its default and, where it differs, its ``--quick``
    value, read from the recipes that run (``family_spec``: ``ReproduceSpec``, ``QUICK``,
    ``Family.quick_epochs``) so that the help cannot drift from them."""
    from landscape.report.recipe import FAMILIES, family_spec

    full = {name: family_spec(name) for name in FAMILIES}
    quick = {name: family_spec(name, quick=True) for name in FAMILIES}
    base, small = full["resnet"], quick["resnet"]

    def both(field: str) -> str:
        a, b = getattr(base, field), getattr(small, field)
        return f"default {_typed(a)}" + ("" if a == b else f"; --quick: {_typed(b)}")

    by_epochs: dict[int, list[str]] = {}
    for name, spec in quick.items():
        by_epochs.setdefault(spec.epochs, []).append(name)
    epochs = f"default {base.epochs}"
    if set(by_epochs) != {base.epochs}:
        epochs += "; --quick: " + ", ".join(
            f"{n} for {' and '.join(names)}" for n, names in by_epochs.items()
        )
    model_args = "; ".join(
        f"{name}: {_typed(spec.model_args, '=')}" for name, spec in full.items() if spec.model_args
    )
    n = small.curvature_points
    fewer = any(quick[name].epochs < full[name].epochs for name in FAMILIES)
    return {
        "family": f"{', '.join(FAMILIES)}: the pairs to compare (default resnet)",
        "quick": f"the smaller recipe: seeds {_typed(small.seeds)}, ranges "
        f"{_typed(small.ranges)}, a {n}×{n} curvature map, the Hessian on "
        f"{small.hessian_samples} images with {small.slq_probes} SLQ probes of "
        f"{small.slq_steps} steps" + (", fewer epochs for some families" if fewer else ""),
        "seeds": f"training seeds ({both('seeds')})",
        "epochs": f"training epochs per net ({epochs})",
        "pairs": f"net pairs (default: the --family's; resnet: {_typed(base.pairs)})",
        "dataset": f"data set name or file (default {base.data.name})",
        "range": f"surface ranges, half-width and points per axis ({both('ranges')})",
        "model_arg": "an argument for every net, e.g. width=16 (default: the --family's"
        + (f"; {model_args})" if model_args else ", none)"),
        "precision": f"the surfaces' precision, {', '.join(get_args(Precision))} (default "
        f"{base.precision}; tf32 and bf16 need CUDA, where auto is tf32); training, Hessian "
        "and gradient flow are fp32 whatever it says",
    }


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    words = recipe_help()
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "reproduce",
        help="reproduce the skip-vs-plain story into one offline report",
        description="Train nets with and without their identity path under one fixed recipe "
        "(docs/reproduce.md; ResNet-20 and -56 by default, --family for highway nets, "
        "Transformers or recurrent nets), measure their loss surfaces, curvature, Hessian "
        "spectra and gradient flow, and write report.json and an offline report.html. "
        "Each option shows its value in the recipe and, where it differs, in the --quick one; "
        "an option given replaces that value in either.",
    )
    parser.add_argument("story", choices=STORIES, help="which story to reproduce")
    parser.add_argument("--family", default="resnet", help=words["family"])
    parser.add_argument("--quick", action="store_true", help=words["quick"])
    parser.add_argument(
        "--out", type=Path, default=None,
        help="report and cache folder (default cache/skip-vs-plain[-FAMILY][-quick][-PRECISION])",
    )  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help=words["seeds"])
    parser.add_argument("--epochs", type=int, default=None, help=words["epochs"])
    parser.add_argument(
        "--pairs", nargs="+", default=None, metavar="SKIP:PLAIN", help=words["pairs"]
    )
    parser.add_argument("--dataset", default=None, help=words["dataset"])
    parser.add_argument("--data-root", default=None, help="folder holding torchvision data sets")
    parser.add_argument("--download", action="store_true", help="download missing data sets")
    parser.add_argument(
        "--train-size", type=int, default=None, help="keep a fixed subset (default all)"
    )
    parser.add_argument(
        "--test-size", type=int, default=None, help="keep a fixed subset (default all)"
    )
    parser.add_argument(
        "--range", dest="ranges", nargs="+", default=None, metavar="HALF:N", help=words["range"]
    )
    parser.add_argument(
        "--model-arg", dest="model_args", nargs="+", default=None, metavar="KEY=INT",
        help=words["model_arg"],
    )  # fmt: skip
    parser.add_argument("--precision", default=None, help=words["precision"])
    parser.add_argument(
        "--device", default="auto", help=choices_text(DeviceName, {"auto": "default"})
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="surface engine processes (default one per core)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def _pairs(values: list[str]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for value in values:
        skip, sep, plain = value.partition(":")
        if not sep or not skip or not plain:
            raise SpecError(f"--pairs takes SKIP:PLAIN, got {value!r}")
        pairs.append((skip, plain))
    return tuple(pairs)


def _ranges(values: list[str]) -> tuple[tuple[float, int], ...]:
    ranges = []
    for value in values:
        half, sep, n = value.partition(":")
        try:
            ranges.append((float(half), int(n)))
        except ValueError:
            raise SpecError(f"--range takes HALF:N (e.g. 0.25:31), got {value!r}") from None
        if not sep:
            raise SpecError(f"--range takes HALF:N (e.g. 0.25:31), got {value!r}")
    return tuple(ranges)


def _model_args(values: list[str]) -> tuple[tuple[str, int], ...]:
    out = []
    for value in values:
        key, sep, number = value.partition("=")
        try:
            out.append((key, int(number)))
        except ValueError:
            raise SpecError(f"--model-arg takes KEY=INT, got {value!r}") from None
        if not sep or not key:
            raise SpecError(f"--model-arg takes KEY=INT, got {value!r}")
    return tuple(out)


def spec_from_args(args: argparse.Namespace) -> Any:
    """The ``ReproduceSpec``: the family's documented recipe with only the named values
    changed (``--model-arg`` adds to or replaces the family's own model arguments)."""
    from landscape.report.recipe import FAMILIES, family_spec

    if args.family not in FAMILIES:
        raise UnknownNameError("family", args.family, list(FAMILIES))
    changes: dict[str, Any] = {"device": args.device, "workers": args.workers}
    if args.precision is not None:
        changes["precision"] = args.precision
    if args.seeds is not None:
        changes["seeds"] = tuple(args.seeds)
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.pairs is not None:
        changes["pairs"] = _pairs(args.pairs)
    if args.ranges is not None:
        changes["ranges"] = _ranges(args.ranges)
    if args.model_args is not None:
        merged = dict(FAMILIES[args.family].model_args) | dict(_model_args(args.model_args))
        changes["model_args"] = tuple(merged.items())
    if args.dataset or args.data_root or args.download or args.train_size or args.test_size:
        changes["data"] = DataSpec(
            name=args.dataset or "digits",
            data_root=args.data_root,
            train_size=args.train_size,
            test_size=args.test_size,
            download=args.download,
        )
    if args.workers is not None and args.workers < 1:
        raise SpecError(f"--workers must be >= 1, got {args.workers}")
    return family_spec(args.family, quick=args.quick, **changes)


def out_dir(args: argparse.Namespace) -> Path:
    """``--out``, else a folder per family, recipe size and (other than fp32) precision
    (caches are keyed by inputs, but each folder's report.json is one report)."""
    if args.out is not None:
        return Path(args.out)
    family = "" if args.family == "resnet" else f"-{args.family}"
    precision = "" if args.precision in (None, "fp32") else f"-{args.precision}"
    return Path(f"cache/skip-vs-plain{family}{'-quick' if args.quick else ''}{precision}")


def run(args: argparse.Namespace) -> int:
    from landscape.cli.progress import step_bar
    from landscape.report.estimate import estimate_report, minutes
    from landscape.report.reproduce import reproduce, surface_options

    spec = spec_from_args(args)
    precision = surface_options(spec).precision  # tf32 or bf16 on a CPU: refused before timing
    out = out_dir(args)
    clock = time.perf_counter()
    steps = estimate_report(spec, out)
    forecast = sum(step.seconds for step in steps)
    print(
        f"forecast: {minutes(forecast)} for {len(steps)} steps here (each net's units timed "
        f"in {time.perf_counter() - clock:.0f} s; cached results in {out} count as done; "
        f"surfaces in {precision})",
        flush=True,
    )
    bar = step_bar(args.quiet, "reproduce", weights=[max(s.seconds, 0.01) for s in steps])

    result = reproduce(spec, out, on_progress=lambda what, done, total: bar(done, total, what))
    print(f"report: {result.html_path}")
    print(f"numbers: {result.json_path}")
    print(f"wall time: {result.wall_time_s:.0f} s (forecast {forecast:.0f} s)")
    return 0
