"""The data set options that ``train`` and ``surface`` share, and their one ``DataSpec``;
the checkpoint-or-surface options that the analyses of a surface (hessian, gradient-flow) share."""

from __future__ import annotations

import argparse
from pathlib import Path

from landscape.errors import SpecError
from landscape.specs import DataSpec


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="digits", help="data set name or a .pt/.npz file")
    parser.add_argument("--train-size", type=int, default=None, help="keep a fixed subset")
    parser.add_argument("--test-size", type=int, default=None, help="keep a fixed subset")
    parser.add_argument("--data-root", default=None, help="folder holding torchvision data sets")
    parser.add_argument("--download", action="store_true", help="download missing data sets")


def data_spec_from_args(args: argparse.Namespace) -> DataSpec:
    check_sizes(args)
    return DataSpec(
        name=args.dataset,
        data_root=args.data_root,
        train_size=args.train_size,
        test_size=args.test_size,
        download=args.download,
    )


def add_analysis_source_arguments(parser: argparse.ArgumentParser) -> None:
    """What an analysis is of: a checkpoint or a surface's, and data defaulting to the surface's."""
    parser.add_argument(
        "--checkpoint", default=None, help="landscape checkpoint (default: the --surface's)"
    )
    parser.add_argument("--surface", type=Path, default=None, help="surface file to store into")
    parser.add_argument(
        "--dataset", default=None, help="data set name or file (default: the surface's, digits)"
    )
    parser.add_argument("--data-root", default=None, help="folder holding torchvision data sets")
    parser.add_argument("--train-size", type=int, default=None, help="keep a fixed subset")


def check_sizes(args: argparse.Namespace) -> None:
    """``--train-size``/``--test-size`` as the user typed them (the library says "size")."""
    for flag in ("train_size", "test_size"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise SpecError(f"--{flag.replace('_', '-')} must be a positive integer, got {value}")
