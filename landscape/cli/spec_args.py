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


PARAMS_HELP = (
    "only these parameters move (the rest stay fixed): comma-separated fnmatch globs over "
    "named_parameters() names, e.g. 'layer3.*' or 'fc.*,layer3.*', or 'trainable' (those "
    "with requires_grad); default: all"
)


def add_params_argument(parser: argparse.ArgumentParser) -> None:
    """``--params``: the parameter subset of directions or of a Hessian analysis."""
    parser.add_argument("--params", default=None, metavar="PATTERNS", help=PARAMS_HELP)


def parse_param_patterns(text: str | None) -> tuple[str, ...]:
    """``"layer3.*, fc.*"`` → ``("layer3.*", "fc.*")``; None → ``()`` (every parameter)."""
    if text is None:
        return ()
    patterns = tuple(part.strip() for part in text.split(","))
    if not all(patterns):
        raise SpecError(f"--params wants comma-separated name patterns, got {text!r}")
    return tuple(dict.fromkeys(patterns))
