"""``landscape info``: what a surface file holds, without opening a notebook."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any


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


def format_summary(summary: dict[str, Any]) -> str:
    """The human-readable view of ``surface_summary``."""
    spec, prov, grid = summary["spec"], summary["provenance"], summary["grid"]
    pct = 100 * summary["done"] / summary["total"] if summary["total"] else 0
    if summary["ndim"] == 2:
        shape = f"2D {grid['nx']}×{grid['ny']}, x {grid['xrange']}, y {grid['yrange']}"
    else:
        shape = f"1D {grid['nx']} points, x {grid['xrange']}"
    d = spec["directions"]
    engine = prov.get("engine") or {}
    lines = [
        f"{summary['path']}: {summary['status']}, {summary['done']}/{summary['total']} points "
        f"({pct:.0f}%)",
        f"  id          {summary['id']}",
        f"  model       {summary['model']} (checkpoint {spec['checkpoint']}, "
        f"sha256 {str(prov.get('checkpoint_sha256', '?'))[:12]}…)",
        f"  data        {summary['dataset']}, splits {', '.join(spec['splits'])}, "
        f"loss {spec['loss']}",
        f"  grid        {shape}",
        f"  directions  {d['kind']}, normalization {d['normalization']}, ignore {d['ignore']}, "
        f"seed {d['seed']}",
        f"  created     {summary['created']}",
    ]
    if engine:
        lines.append(
            f"  engine      {engine.get('device')} {engine.get('dtype')} {engine.get('method')}, "
            f"{engine.get('workers')} worker(s)"
        )
    if isinstance(prov.get("wall_time_s"), (int, float)):
        lines.append(f"  wall time   {prov['wall_time_s']:.1f} s")
    versions = prov.get("versions") or {}
    if versions:
        lines.append("  versions    " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    if summary["stats"]:
        lines.append("  metrics")
        width = max(len(k) for k in summary["stats"])
        for key, value in sorted(summary["stats"].items()):
            lines.append(f"    {key:<{width}}  {_number(value)}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from landscape.store import surface_summary

    summary = surface_summary(args.surface)
    hessian = _hessian_summary(args.surface)
    if hessian is not None:
        summary["hessian"] = hessian
    if args.json:
        print(json.dumps(_json_safe(summary), indent=2, sort_keys=True, default=str))
    else:
        print(format_summary(summary))
        if hessian is not None:
            from landscape.cli.hessian_cmd import format_table

            print(format_table(hessian))
    return 0


def _hessian_summary(path: Path) -> dict[str, Any] | None:
    """The optional hessian/ group written by ``landscape hessian --surface`` (or None)."""
    from landscape.analysis import GROUP_NAME, group_summary
    from landscape.store import read_group

    group = read_group(path, GROUP_NAME)
    return group_summary(*group) if group is not None else None


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON: they become null, as in the API."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
