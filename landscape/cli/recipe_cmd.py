"""``landscape recipe s.h5``: the JSON that rebuilds a surface, and its use by ``surface``.

``landscape surface --recipe r.json --checkpoint ck.pt --out s.h5`` takes the whole spec from
the recipe (``apply_recipe``): flags that would change the numbers are refused beside it, and
every difference from what made the surface is named before anything is computed.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from landscape.errors import SpecError

# ``landscape surface`` flags that set what the recipe sets (by argparse dest).
SPEC_FLAGS = (
    "dataset", "train_size", "test_size", "dim", "grid", "grid_y", "range", "yrange",
    "grid_z", "zrange", "directions", "hessian_ends", "normalization", "ignore", "seed",
    "max_lanczos_steps", "params", "target", "trajectory", "through", "splits", "loss",
    "loss_factory", "precision", "estimate", "estimate_seed", "exact",
)  # fmt: skip


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "recipe",
        help="write the JSON recipe that rebuilds a surface (landscape surface --recipe)",
        description="Print everything that made a surface file -- model, checkpoint digest, "
        "data subset, directions, grid, loss, precision, estimate settings, versions -- as "
        "JSON; landscape surface --recipe FILE --checkpoint CK rebuilds it (docs/recipes.md).",
    )
    parser.add_argument("surface", type=Path, help="HDF5 surface file")
    parser.add_argument("--out", type=Path, default=None, help="write here instead of stdout")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from landscape.recipe import recipe_of

    text = json.dumps(recipe_of(args.surface), indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
    return 0


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """``surface``'s recipe options; called once every other option is added, so the
    defaults of the flags a recipe sets are known when they are checked."""
    parser.add_argument(
        "--recipe", type=Path, default=None, metavar="RECIPE.json",
        help="rebuild the surface a recipe describes (from landscape recipe); the recipe sets "
        "the grid, directions, data, loss and precision",
    )  # fmt: skip
    parser.add_argument(
        "--allow-differences", action="store_true",
        help="with --recipe: compute even when the checkpoint, model or data set differ "
        "from the recipe's (each difference is printed)",
    )  # fmt: skip
    defaults = {dest: parser.get_default(dest) for dest in SPEC_FLAGS}
    parser.set_defaults(spec_flag_defaults=defaults)


def refuse_spec_flags(args: argparse.Namespace) -> None:
    """A flag that changes the numbers cannot stand beside a recipe: it would silently lose."""
    defaults = args.spec_flag_defaults
    given = [d for d in SPEC_FLAGS if getattr(args, d, None) != defaults.get(d)]
    if given:
        flags = ", ".join(f"--{d.replace('_', '-')}" for d in given)
        raise SpecError(
            f"{flags} cannot go with --recipe, which sets them: edit the recipe's JSON instead"
        )


def apply_recipe(args: argparse.Namespace, checkpoint: str, options: Any) -> tuple[Any, Any, Any]:
    """The recipe's spec, engine options (its precision) and estimate for ``checkpoint``,
    after naming every difference: blocking ones refuse unless ``--allow-differences``,
    the others (versions) are warnings on stderr."""
    from landscape.recipe import check_recipe, estimate_from_recipe, load_recipe, spec_from_recipe

    refuse_spec_flags(args)
    recipe = load_recipe(args.recipe)
    spec = spec_from_recipe(recipe, checkpoint, args.data_root)
    spec = replace(spec, data=replace(spec.data, download=args.download))
    differences = check_recipe(
        recipe, checkpoint, factory=args.model_factory, data_root=args.data_root
    )
    blocking = [d for d in differences if d.blocking]
    if blocking and not args.allow_differences:
        named = "; ".join(str(d) for d in blocking)
        raise SpecError(
            f"cannot rebuild {args.recipe} exactly from {args.checkpoint}: {named} "
            "(--allow-differences computes it anyway)"
        )
    for difference in differences:
        print(f"warning: {difference}", file=sys.stderr)
    precision = recipe.get("precision", "fp32")
    options = replace(options, precision=precision)
    return spec, options, estimate_from_recipe(recipe)


def check_rebuilt_id(args: argparse.Namespace, key: str) -> None:
    """The rebuilt file's content key against the recipe's: the last word on whether every
    input was the same (a factory's builder arguments, say, which no file records apart)."""
    from landscape.recipe import load_recipe

    wanted = (load_recipe(args.recipe).get("surface") or {}).get("key")
    if wanted and wanted != key:
        print(
            f"warning: the rebuilt surface's id {key} is not the recipe's {wanted}: an input "
            "differs (see the differences above), or the recipe's file predates this key scheme",
            file=sys.stderr,
        )
