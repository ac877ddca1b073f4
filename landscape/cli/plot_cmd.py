"""``landscape plot``: a surface file → a standalone interactive page: the web page's figure
with the surface's numbers and Plotly.js embedded (opens offline)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "plot",
        help="write a standalone interactive HTML page of a surface",
        description="Write an HTML page drawing the surface as the web page does (3D surface, "
        "contour or heatmap; the 1D curve), with the same scales and labels. Plotly.js is "
        "embedded, so the page opens offline.",
    )
    parser.add_argument("surface", type=Path, help="HDF5 surface file")
    parser.add_argument(
        "--out", type=Path, default=None, help="HTML file (default: <surface>.html)"
    )
    parser.add_argument("--metric", default="train_loss", help="e.g. train_loss, test_acc")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument(
        "--log",
        dest="log",
        action="store_const",
        const=True,
        help="log10 scale (default: log for losses spanning two decades or more)",
    )
    scale.add_argument(
        "--linear",
        dest="log",
        action="store_const",
        const=False,
        help="linear scale (losses above 10 are drawn at 10, and the page says so)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Errors name the paths as typed (``landscape.cli.wording``)."""
    from landscape.cli.wording import in_user_words

    with in_user_words([args.surface, args.out]):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from landscape.plot.html import write_html
    from landscape.storage import read_surface

    surface = read_surface(args.surface)
    out = args.out or args.surface.with_suffix(".html")
    write_html(surface, out, args.metric, log=args.log)
    note = "" if surface.status == "complete" else f" (partial: {surface.done}/{surface.total})"
    print(f"wrote {out}{note}")
    return 0
