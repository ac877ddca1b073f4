"""What ``landscape train`` and ``landscape surface`` read the same way: the loss
(``--loss`` or ``--loss-factory``) and the model's keyword arguments (``--model-arg``)."""

from __future__ import annotations

import argparse

from landscape.errors import SpecError


def loss_from_args(args: argparse.Namespace) -> str:
    """The loss ``--loss`` names or ``--loss-factory`` imports, as the spec's name: checked
    (and a factory imported) before any file is touched."""
    from landscape.losses import get_loss, load_loss_factory

    if args.loss_factory is not None:
        if args.loss is not None:
            raise SpecError("give --loss (a registered loss) or --loss-factory (yours), not both")
        return load_loss_factory(args.loss_factory).name
    return get_loss(args.loss or "cross_entropy").name


def parse_model_args(pairs: list[str]) -> dict[str, int | float | str]:
    """``["depth=8", "shortcut=projection"]`` → ``{"depth": 8, "shortcut": "projection"}``."""
    parsed: dict[str, int | float | str] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise SpecError(f"--model-arg wants KEY=VALUE, got {pair!r}")
        value: int | float | str = text
        for convert in (int, float):
            try:
                value = convert(text)
                break
            except ValueError:
                continue
        parsed[key] = value
    return parsed
