"""``landscape export``: a surface file → ParaView ``.vtp`` (as the reference tool's h52vtp)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "export",
        help="export a surface for ParaView (.vtp)",
        description="Export a surface as VTK XML PolyData for ParaView: points at "
        "(x, y, value), quads between computed points, every metric as point data.",
    )
    parser.add_argument("surface", type=Path, help="HDF5 surface file")
    parser.add_argument("--vtp", type=Path, required=True, help="output .vtp file")
    parser.add_argument("--metric", default="train_loss", help="metric used as height")
    parser.add_argument("--log", action="store_true", help="log10 of the metric as height")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Errors name the paths as typed (``landscape.cli.wording``)."""
    from landscape.cli.wording import in_user_words

    with in_user_words([args.surface, args.vtp]):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from landscape.plot.vtp import export_vtp
    from landscape.storage import read_surface

    out = export_vtp(read_surface(args.surface), args.vtp, args.metric, log=args.log)
    print(f"wrote {out}")
    return 0
