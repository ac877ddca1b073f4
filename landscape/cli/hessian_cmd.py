"""``landscape hessian``: the curvature numbers of a checkpoint, optionally stored in its surface.

Extreme Hessian eigenvalues (Lanczos), the trace (Hutchinson 1989), the eigenvalue density
(stochastic Lanczos quadrature, Ghorbani et al. 2019) and, over a surface's plane, the
``|λ_min/λ_max|`` map of Li et al. 2018 §6. With ``--surface`` the data, loss and checkpoint
default to the surface's own, the checkpoint's bytes must match the file's, and the results
replace the file's ``hessian/`` group (docs/format.md, "Curvature").

Defaults are sized to finish in minutes on a CPU: the Hessian of ``--samples`` (256) samples of
the split (the first of its fixed seeded permutation: the subset ``--train-size`` keeps, in
original order), and ``--steps`` (30) fixed Lanczos steps for the eigenvalues and each
map point, which cost exactly that many products where ARPACK can restart for an hour on a
trained net. Every eigenvalue is printed with whether it converged (its residual within
``--tol`` of the spectrum's scale), so a cut-short result is never mistaken for an answer.
``--data-spread K`` repeats the spectrum on K disjoint subsets of that size and prints the
spread, since a subset's λ_max can be far from the next subset's.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import TYPE_CHECKING, Any

from landscape.cli.data_args import add_analysis_source_arguments, check_sizes
from landscape.cli.spec_args import parse_param_patterns
from landscape.cli.wording import choices_text, in_user_words, require_file
from landscape.errors import SpecError
from landscape.specs import AnalysisSpec, DataSpec, DeviceName, HessianDtype, LossName, Split

if TYPE_CHECKING:
    from landscape.storage import Surface


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "hessian",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="Hessian eigenvalues, trace, eigenvalue density and curvature map of a checkpoint",
        description="Compute the largest and smallest Hessian eigenvalues (Lanczos) and the "
        "trace (Hutchinson) of the mean loss over a data split at a checkpoint, and with "
        "--density-probes its eigenvalue density (stochastic Lanczos quadrature); with "
        "--surface, store them in that surface file's hessian/ group, and with "
        "--curvature-grid, map |λmin/λmax| over the surface's plane (Li et al. 2018 §6).",
    )
    add_analysis_source_arguments(parser)
    parser.add_argument("--test-size", type=int, default=None, help="keep a fixed subset")
    parser.add_argument("--split", default="train", help=choices_text(Split))
    parser.add_argument(
        "--loss", default=None, help=choices_text(LossName) + " (default: the surface's)"
    )
    parser.add_argument("--top", type=int, default=3, help="largest eigenvalues to compute")
    parser.add_argument("--bottom", type=int, default=1, help="smallest eigenvalues to compute")
    parser.add_argument("--trace", action="store_true", help="estimate the trace (Hutchinson)")
    parser.add_argument("--trace-samples", type=int, default=100, help="Hutchinson probes")
    parser.add_argument(
        "--curvature-grid", type=int, default=0, metavar="N",
        help="map |λmin/λmax| on N×N points of the surface's grid (needs --surface)",
    )  # fmt: skip
    parser.add_argument(
        "--curvature-steps", type=int, default=None, metavar="K",
        help="Lanczos steps per map point (default: --steps)",
    )  # fmt: skip
    parser.add_argument(
        "--steps", type=int, default=30, metavar="K",
        help="fixed Lanczos steps for the eigenvalues and each map point (0: ARPACK to --tol)",
    )  # fmt: skip
    parser.add_argument(
        "--samples", type=int, default=256, metavar="N",
        help="Hessian of the mean loss over N samples of the split: the first N of its fixed "
        "seeded permutation, the subset --train-size N keeps (0: all)",
    )  # fmt: skip
    parser.add_argument(
        "--data-spread", type=int, default=0, metavar="K",
        help="λmax, λmin and the trace again on K disjoint subsets of --samples each "
        "(consecutive blocks of that permutation, the first the analysed one), with their "
        "spread (0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--density-probes", type=int, default=0, metavar="N",
        help="eigenvalue density from N random probes (stochastic Lanczos quadrature; 0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--density-steps", type=int, default=40, metavar="M",
        help="Lanczos steps per density probe: M quadrature nodes each",
    )  # fmt: skip
    parser.add_argument(
        "--tol", type=float, default=1e-3,
        help="converged when each eigenvalue's residual is <= tol × the largest |eigenvalue| "
        "(also ARPACK's tolerance)",
    )  # fmt: skip
    parser.add_argument("--maxiter", type=int, default=None, help="Lanczos restarts at most")
    parser.add_argument("--seed", type=int, default=0, help="start vector and probes' seed")
    parser.add_argument("--batch-size", type=int, default=256, help="samples per pass")
    parser.add_argument("--device", default="auto", help=choices_text(DeviceName))
    parser.add_argument("--dtype", default="float32", help=choices_text(HessianDtype) + " products")
    parser.add_argument(
        "--params", default=None, metavar="PATTERNS",
        help="the Hessian's block of these parameters (the rest held fixed): comma-separated "
        "fnmatch globs over named_parameters() names or 'trainable', as surface --params "
        "(default: the --surface's subset, else all; '*': all)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def _spec(args: argparse.Namespace) -> tuple[AnalysisSpec, Surface | None]:
    """The analysis (defaults from the surface) and the surface read for them; every bad
    value fails before any loading."""
    if args.checkpoint is None and args.surface is None:
        raise SpecError("name a --checkpoint (or a --surface whose checkpoint to use)")
    if args.curvature_grid and args.surface is None:
        raise SpecError("--curvature-grid needs --surface (its directions and grid)")
    check_sizes(args)
    surface = None
    if args.surface is not None:
        from landscape.storage import read_surface

        require_file(args.surface, "surface file")
        surface = read_surface(args.surface)
    checkpoint = args.checkpoint or (surface.spec.checkpoint if surface else None)
    assert checkpoint is not None, "checked above"
    require_file(checkpoint, "checkpoint" if args.checkpoint else "the surface's checkpoint")
    base = surface.spec.data if surface is not None else DataSpec()
    same_data = args.dataset is None
    if args.trace_samples < 1:
        raise SpecError(f"--trace-samples must be >= 1, got {args.trace_samples}")
    if args.data_spread and not args.samples:
        raise SpecError("--data-spread needs a subset size: --samples N (not 0)")
    for flag, value in (("--steps", args.steps), ("--samples", args.samples)):
        if value < 0:
            raise SpecError(f"{flag} must be >= 0, got {value}")
    train_size = args.train_size or (base.train_size if same_data else None)
    test_size = args.test_size or (base.test_size if same_data else None)
    if args.samples and args.split == "train":
        train_size = min(train_size or args.samples, args.samples)
    elif args.samples:
        test_size = min(test_size or args.samples, args.samples)
    data = DataSpec(
        name=args.dataset or base.name,
        data_root=args.data_root or (base.data_root if same_data else None),
        train_size=train_size,
        test_size=test_size,
    )
    if args.steps == 1:
        raise SpecError("--steps must be 0 (ARPACK) or at least 2, got 1")
    steps = args.steps or None
    curvature_steps = args.curvature_steps
    if curvature_steps is None and args.curvature_grid:
        curvature_steps = steps
    spec = AnalysisSpec(
        checkpoint=checkpoint,
        data=data,
        split=args.split,
        loss=args.loss or (surface.spec.loss if surface is not None else "cross_entropy"),
        top=args.top,
        bottom=args.bottom,
        trace_samples=args.trace_samples if args.trace else 0,
        curvature_grid=args.curvature_grid,
        curvature_steps=curvature_steps,
        spectrum_steps=steps,
        density_probes=args.density_probes,
        density_steps=args.density_steps,
        tol=args.tol,
        maxiter=args.maxiter,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        data_spread=args.data_spread,
        params=_params(args.params, surface),
    )
    return spec, surface


def _params(text: str | None, surface: Surface | None) -> tuple[str, ...]:
    """``--params`` as typed; not given, the surface's subset (its curvature is then of the
    parameters its plane moves), else every parameter."""
    if text is not None:
        patterns = parse_param_patterns(text)
        return () if patterns == ("*",) else patterns
    return surface.spec.directions.params if surface is not None else ()


def run(args: argparse.Namespace) -> int:
    """Errors name the flags and paths as typed (``landscape.cli.wording``)."""
    with in_user_words([args.checkpoint, args.surface]):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from landscape.analysis import GROUP_NAME, analyze, group_summary
    from landscape.analysis.analyze import analysis_costs
    from landscape.cli.progress import step_bar

    spec, surface = _spec(args)
    costs = analysis_costs(spec, surface.x if surface else None, surface.y if surface else None)
    bar = step_bar(args.quiet, "hessian", weights=costs)
    arrays, attrs = analyze(spec, args.surface, on_progress=bar)
    summary = group_summary(arrays, attrs)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        stored = f"{args.surface}:{GROUP_NAME}/" if args.surface is not None else None
        print(format_table(summary, stored=stored))
    return 0


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "nan"
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def format_table(summary: dict[str, Any], *, stored: str | None = None) -> str:
    """The human-readable view of ``group_summary`` (also used by ``landscape info``)."""
    data = summary.get("data") or {}
    lines = [
        f"hessian of the mean {summary.get('loss', '?')} loss on {data.get('name', '?')}/"
        f"{summary.get('split', '?')} ({summary.get('n_samples', '?')} samples) at "
        f"{summary.get('checkpoint', '?')}",
    ]
    rows: list[tuple[str, str]] = []
    if "n_params" in summary:
        subset = summary.get("params")
        rows.append(
            ("parameters", str(summary["n_params"])
             + (f" ({', '.join(subset)}; the rest held fixed)" if subset else ""))
        )  # fmt: skip
    for rank, value in enumerate(summary.get("top_eigenvalues", []), start=1):
        rows.append((f"λ_max #{rank}", _number(value)))
    for rank, value in enumerate(summary.get("bottom_eigenvalues", []), start=1):
        rows.append((f"λ_min #{rank}", _number(value)))
    if "ratio" in summary:
        rows.append(("|λ_min/λ_max|", _number(summary["ratio"])))
    if "trace" in summary:
        samples = (summary.get("settings") or {}).get("trace_samples", "?")
        rows.append(
            ("trace", f"{_number(summary['trace'])} ± {_number(summary.get('trace_stderr'))} "
                      f"(Hutchinson, {samples} probes)")
        )  # fmt: skip
    if summary.get("top_eigenvalues") or summary.get("bottom_eigenvalues"):
        rows.append(("converged", convergence_line(summary)))
    if "matvecs" in summary:
        rows.append(("cost", f"{summary['matvecs']} Hessian-vector products, "
                             f"{summary.get('wall_time_s', 0.0):.1f} s"))  # fmt: skip
    cmap = summary.get("curvature_map")
    if cmap:
        shape = "×".join(str(n) for n in reversed(cmap["shape"]))
        rows.append(
            (f"curvature map {shape}", f"|λ_min/λ_max| median {_number(cmap['ratio_median'])}, "
                                       f"max {_number(cmap['ratio_max'])}")
        )  # fmt: skip
        rows.append(("map Lanczos", map_convergence_line(cmap)))
    density = summary.get("density")
    if density:
        rows.append(("eigenvalue density", density_line(density)))
    plane = summary.get("plane_curvature")
    if plane:
        rows += plane_rows(plane)
    rows += spread_rows(summary.get("data_spread"))
    width = max((len(name) for name, _ in rows), default=0)
    lines += [f"  {name:<{width}}  {value}" for name, value in rows]
    if plane:
        lines.append(f"  {plane['sentence']}")
    if stored:
        lines.append(f"  stored in {stored}")
    return "\n".join(lines)


def plane_rows(plane: dict[str, Any]) -> list[tuple[str, str]]:
    """One row per plotted axis: its curvature at the centre by a Hessian-vector product and
    by the surface's second difference, beside tr(H)/n and the extreme eigenvalues."""
    rows = []
    for k, axis in enumerate(plane["axes"]):
        step = plane["step"][k]
        if step is None:
            fd = "finite difference n/a (the grid has no centre point)"
        else:
            fd = (
                f"finite difference {_number(plane['finite_difference'][k])} "
                f"({plane['metric']}, step h = {step:.3g} in {axis}, "
                f"{step * plane['norm'][k]:.3g} in weights)"
            )
        rows.append((
            f"plane curvature {axis}",
            f"δᵀHδ/‖δ‖² {_number(plane['hessian'][k])}, {fd}; "
            f"tr(H)/n {_number(plane['mean_curvature'])}, λ_min {_number(plane['lambda_min'])}, "
            f"λ_max {_number(plane['lambda_max'])}",
        ))  # fmt: skip
    return rows


def convergence_line(summary: dict[str, Any]) -> str:
    """``yes`` or "NOT converged (residual r vs tol t)" for the spectrum's eigenvalues."""
    if "converged" not in summary:
        return "unknown (file written before convergence was recorded)"
    residuals = [*(summary.get("top_residuals") or []), *(summary.get("bottom_residuals") or [])]
    largest, tol = _number(_largest(residuals)), _number(summary.get("tolerance"))
    if summary["converged"]:
        return f"yes (residuals <= {largest}, tol {tol})"
    return f"NOT converged (residual {largest} vs tol {tol}): raise --steps"


def map_convergence_line(cmap: dict[str, Any]) -> str:
    """How the map's Lanczos ran and how many of its points did not converge."""
    how = f"{cmap['steps']} steps a point" if cmap.get("steps") else "ARPACK"
    largest = _number(_largest(_flat(cmap.get("residual_max")) + _flat(cmap.get("residual_min"))))
    if "not_converged" not in cmap:
        return f"{how}, residuals <= {largest}"
    points = len(_flat(cmap["converged"]))
    if cmap["not_converged"] == 0:
        return f"{how}, all {points} points converged (residuals <= {largest})"
    return (
        f"{how}, {cmap['not_converged']} of {points} points NOT converged (residual "
        f"{largest} vs tol {_number(cmap.get('tol'))} × the point's largest |λ|): raise --steps"
    )


def density_line(density: dict[str, Any]) -> str:
    """One line: where the SLQ nodes lie and the share of eigenvalues below −ε with its
    interval (``landscape.analysis.negative_mass``)."""
    return (
        f"nodes {_number(density['node_min'])} … {_number(density['node_max'])}, "
        f"{negative_text(density)} "
        f"(SLQ, {density['probes']} probes × {density['steps']} steps, seed {density['seed']})"
    )


def negative_text(density: dict[str, Any]) -> str:
    """The share below −ε with its interval, or that the file predates it."""
    if density.get("negative_fraction") is None:
        return "negative mass not recorded (file predates it)"
    low, high = density["negative_interval"]
    return (
        f"negative mass {density['negative_fraction']:.3g} below −{density['negative_epsilon']:.2g}"
        f" (interval {low:.3g} … {high:.3g})"
    )


def spread_rows(spread: dict[str, Any] | None) -> list[tuple[str, str]]:
    """One row per quantity: mean ± sd (min … max) over the disjoint subsets."""
    if not spread:
        return []
    labels = {"lambda_max": "λ_max", "lambda_min": "λ_min", "trace": "trace"}
    rows = []
    for name, label in labels.items():
        if name in spread:
            q = spread[name]
            rows.append((
                f"{label} over data",
                f"{_number(q['mean'])} ± {_number(q['sd'])} ({_number(q['min'])} … "
                f"{_number(q['max'])}) over {spread['subsets']} disjoint subsets of "
                f"{spread['size']} samples",
            ))  # fmt: skip
    return rows


def _flat(values: Any) -> list[Any]:
    """A list or a list of rows (a 2D map), flattened."""
    return [v for row in values or [] for v in (row if isinstance(row, list) else [row])]


def _largest(values: Any) -> float | None:
    """The largest finite number in a nested list (None when there is none)."""
    finite = [v for v in _flat(values) if v is not None]
    return max(finite) if finite else None
