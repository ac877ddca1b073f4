"""``landscape info``: what a surface file holds, without opening a notebook."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from landscape.storage.summary import json_safe


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "info",
        help="summarize a surface file (status, grid, metrics, provenance)",
        description="Print a surface file's status, grid, summary metrics and provenance.",
    )
    parser.add_argument("surface", type=Path, help="HDF5 surface file")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)
    return parser


def _number(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def summary_dict(path: Path) -> dict[str, Any]:
    """The file's description as JSON-ready data (read once: surface and hessian group)."""
    from dataclasses import asdict

    from landscape.analysis import GROUP_NAME, group_summary
    from landscape.analysis.gradient_flow import GROUP_NAME as FLOW_GROUP
    from landscape.analysis.gradient_flow import from_group as flows_from_group
    from landscape.specs import to_dict
    from landscape.storage import describe, read_surface

    surface = read_surface(path)
    info = describe(surface)
    estimate = None
    if surface.estimate is not None:
        from landscape.storage.estimate import estimate_lines, estimate_summary

        estimate = {**estimate_summary(surface.estimate), "lines": estimate_lines(surface.estimate)}
    grid = info.grid
    summary: dict[str, Any] = {
        "id": info.key,
        "surface_id": info.surface_id,
        "path": str(path),
        "status": info.status,
        "estimate": estimate,  # None: every value is a full pass
        "model": info.model,
        "dataset": info.dataset,
        "ndim": info.ndim,
        "grid": {
            "nx": grid.n_x,
            "ny": grid.n_y,
            "xrange": list(grid.x_range),
            "yrange": list(grid.y_range) if grid.y_range is not None else None,
            "nz": grid.n_z,
            "zrange": list(grid.z_range) if grid.z_range is not None else None,
        },
        "metrics": list(info.metrics),
        "done": info.done,
        "total": info.total,
        "nonfinite": info.nonfinite,
        "precision": info.precision,
        "created": info.created,
        "stats": info.stats,
        "has_trajectory": info.has_trajectory,
        "spec": to_dict(info.spec),
        "provenance": {**info.attrs, **asdict(info.provenance)},
    }
    group = surface.groups.get(GROUP_NAME)
    if group is not None:
        summary["hessian"] = group_summary(*group)
    flow = surface.groups.get(FLOW_GROUP)
    if flow is not None:
        summary["gradient_flow"] = {
            label: f.to_dict() for label, f in flows_from_group(*flow).items()
        }
    return summary


def _params_line(patterns: list[str], info: Any) -> str:
    """Which parameters the directions move: all, or the subset with its share of the net."""
    if not patterns:
        return "all (every parameter moves)"
    line = ", ".join(patterns)
    if isinstance(info, dict) and info.get("params_total_numel"):
        numel, total = info.get("params_numel", 0), info["params_total_numel"]
        line += (
            f" ({info.get('params_selected', '?')} tensors, {numel:,} of {total:,} parameters; "
            "the rest fixed)"
        )
    return line


def _points_line(spec: dict[str, Any], info: Any) -> str:
    """Where the three nets of a three_point plane sit (x, y in parameter units)."""
    points = info.get("points") if isinstance(info, dict) else None
    if not points:
        return "?"
    names = [Path(spec["checkpoint"]).name, *(p["name"] for p in points[1:])]
    return ", ".join(
        f"{name} ({_number(p['x'])}, {_number(p['y'])})"
        for name, p in zip(names, points, strict=False)
    )


def format_summary(summary: dict[str, Any]) -> str:
    """The human-readable view of ``summary_dict``."""
    spec, prov, grid = summary["spec"], summary["provenance"], summary["grid"]
    pct = 100 * summary["done"] / summary["total"] if summary["total"] else 0
    if summary["ndim"] == 3:
        shape = (
            f"3D {grid['nx']}×{grid['ny']}×{grid['nz']}, x {grid['xrange']}, "
            f"y {grid['yrange']}, z {grid['zrange']}"
        )
    elif summary["ndim"] == 2:
        shape = f"2D {grid['nx']}×{grid['ny']}, x {grid['xrange']}, y {grid['yrange']}"
    else:
        shape = f"1D {grid['nx']} points, x {grid['xrange']}"
    d = spec["directions"]
    how = f"normalization {d['normalization']}, ignore {d['ignore']}, seed {d['seed']}"
    if d["kind"] == "three_point":  # Gram–Schmidt of the nets' differences: nothing drawn
        how = "unit axes in parameter units (params: below)"
    engine = prov.get("engine") or {}
    lines = [
        f"{summary['path']}: {summary['status']}, {summary['done']}/{summary['total']} points "
        f"({pct:.0f}%)" + (f", {summary['nonfinite']} not finite" if summary["nonfinite"] else ""),
        f"  id          {summary['id']}",
        f"  model       {summary['model']} (checkpoint {spec['checkpoint']}, "
        f"sha256 {str(prov.get('checkpoint_sha256', '?'))[:12]}…)",
        f"  data        {summary['dataset']}, splits {', '.join(spec['splits'])}, "
        f"loss {spec['loss']}",
        f"  grid        {shape}",
        f"  directions  {d['kind']}{':' if d['kind'] == 'three_point' else ','} {how}",
        f"  params      {_params_line(d.get('params') or [], prov.get('directions_info'))}",
        f"  created     {summary['created']}",
    ]
    if d["kind"] == "three_point":
        lines.insert(-1, f"  nets at     {_points_line(spec, prov.get('directions_info'))}")
    estimate = summary.get("estimate")
    values = "exact" if estimate is None else "estimated"
    lines.append(f"  values      {values}")
    for line in (estimate or {}).get("lines", []):
        lines.append(f"    {line}")
    if engine:
        lines.append(
            f"  engine      {engine.get('device')} {engine.get('precision')} "
            f"{engine.get('method')}, "
            f"{engine.get('workers')} worker(s)"
        )
    if isinstance(prov.get("wall_time_s"), (int, float)):
        lines.append(f"  wall time   {prov['wall_time_s']:.1f} s")
    versions = prov.get("versions") or {}
    if versions:
        lines.append("  versions    " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    stats = distinct_metrics(summary["stats"] or {})
    if stats:
        lines.append("  metrics")
        width = max(len(k) for k in stats)
        for key, value in sorted(stats.items()):
            lines.append(f"    {key:<{width}}  {_number(value)}")
    if summary.get("gradient_flow"):
        lines += flow_lines(summary["gradient_flow"])
    return "\n".join(lines)


def distinct_metrics(stats: dict[str, Any]) -> dict[str, Any]:
    """The metrics without the headline aliases: the file stores ``sharpness`` beside
    ``train_loss_sharpness`` (the same number, for short names in lists); shown once."""

    def same(a: Any, b: Any) -> bool:
        both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
        return bool(a == b or both_nan)

    return {
        key: value
        for key, value in stats.items()
        if not any(k.endswith(f"_loss_{key}") and same(v, value) for k, v in stats.items())
    }


def flow_lines(flows: dict[str, dict[str, Any]]) -> list[str]:
    """The stored gradient flow: per layer ``‖∂L/∂W‖`` at initialization and trained, and the
    input/output ratio in words (as ``landscape gradient-flow`` prints it)."""
    from landscape.report.findings import flow_phrase

    init, trained = flows.get("init"), flows.get("trained")
    shown = trained or init
    assert shown is not None, "a gradient_flow/ group holds init or trained"
    lines = [f"  gradient flow ({shown.get('n_samples', '?')} samples)"]
    width = max((len(str(n)) for n in shown["names"]), default=5)
    lines.append(f"    {'layer':<{width}}  {'init':>10}  {'trained':>10}")
    for i, name in enumerate(shown["names"]):
        values = [_norm(f, i) for f in (init, trained)]
        lines.append(f"    {name:<{width}}  {values[0]:>10}  {values[1]:>10}")
    ratios = [
        f"{label} {_number(f['input_to_output_ratio'])} ({flow_phrase(f['input_to_output_ratio'])})"
        for label, f in (("init", init), ("trained", trained))
        if f is not None and f.get("input_to_output_ratio") is not None
    ]
    if ratios:
        lines.append("    input/output gradient ratio: " + ", ".join(ratios))
    return lines


def _norm(flow: dict[str, Any] | None, i: int) -> str:
    if flow is None or i >= len(flow["grad_norm"]):
        return "-"
    return f"{flow['grad_norm'][i]:.4g}"


def run(args: argparse.Namespace) -> int:
    from landscape.cli.wording import in_user_words

    with in_user_words([args.surface]):
        summary = summary_dict(args.surface)
    if args.json:
        print(json.dumps(json_safe(summary), indent=2, sort_keys=True, default=str))
    else:
        print(format_summary(summary))
        if "hessian" in summary:
            from landscape.cli.hessian_cmd import format_table

            print(format_table(summary["hessian"]))
    return 0
