"""The ``landscape`` command: one subcommand module each, one error boundary here."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from landscape.errors import LandscapeError

# Subcommand modules; each defines ``add_parser(subparsers)`` that sets ``func(args) -> int``.
SUBCOMMANDS = (
    "train",
    "surface",
    "plot",
    "info",
    "export",
    "hessian",
    "gradient_flow",
    "sharpness",
    "interpolate",
    "reproduce",
    "recipe",
    "serve",
    "worker",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="landscape",
        description="Compute, store and show loss landscapes along filter-normalized directions.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"landscape.cli.{name}_cmd")
        module.add_parser(subparsers)
    return parser


def _import_from_cwd() -> None:
    """Let ``--model-factory mynets:make_net`` find ``mynets.py`` in the folder the command
    runs from, as ``python -m`` would: the ``landscape`` script's own ``sys.path`` starts at
    its bin folder. Appended, not prepended, so a local file never shadows an installed
    package."""
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.append(cwd)


def main(argv: list[str] | None = None) -> int:
    _import_from_cwd()
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from landscape.engine.devices import denormals_flushed

    try:
        with denormals_flushed():  # before any torch work: the threads it starts inherit it
            return int(args.func(args) or 0)
    except LandscapeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted; finished work is kept, rerun the same command to resume", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
