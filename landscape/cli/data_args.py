"""The data set options that ``train`` and ``surface`` share, and their one ``DataSpec``."""

from __future__ import annotations

import argparse

from landscape.specs import DataSpec


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="digits", help="data set name or a .pt/.npz file")
    parser.add_argument("--train-size", type=int, default=None, help="keep a fixed subset")
    parser.add_argument("--test-size", type=int, default=None, help="keep a fixed subset")
    parser.add_argument("--data-root", default=None, help="folder holding torchvision data sets")
    parser.add_argument("--download", action="store_true", help="download missing data sets")


def data_spec_from_args(args: argparse.Namespace) -> DataSpec:
    return DataSpec(
        name=args.dataset,
        data_root=args.data_root,
        train_size=args.train_size,
        test_size=args.test_size,
        download=args.download,
    )
