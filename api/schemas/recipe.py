"""A recipe (``landscape recipe``, ``GET /api/surfaces/{id}/recipe``) as a surface request.

``POST /api/surfaces`` with ``{"recipe": {...}}`` (and optionally ``checkpoint`` and
``label``) is the request whose fields the recipe's spec gives: the same validation, limits
and cache apply as to one spelled out by hand. What the server cannot do as the recipe says
(interpolation directions, Hessian ends other than the top, an estimate's own first stage or
level) is a 422 naming it; checkpoint, model and precision are checked when it is planned
(``api/planning/recipe.py``).
"""

from __future__ import annotations

from typing import Any

from landscape.errors import LandscapeError
from landscape.explore.spec import EstimateSpec
from landscape.recipe import estimate_from_recipe, spec_from_recipe

# Body fields that may stand beside a recipe; every other one is the recipe's to set.
BESIDE_RECIPE = frozenset({"recipe", "checkpoint", "label", "allow_differences"})


def request_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The request body with the recipe's spec spelled out as request fields."""
    recipe = body["recipe"]
    clash = sorted(set(body) - BESIDE_RECIPE)
    if clash:
        raise ValueError(
            f"{', '.join(clash)} cannot go with 'recipe', which sets them: edit the recipe "
            "instead (beside it: checkpoint, label, allow_differences)"
        )
    try:
        spec = spec_from_recipe(recipe)
        estimate = estimate_from_recipe(recipe)
    except LandscapeError as exc:
        raise ValueError(str(exc)) from None
    directions = spec.directions
    if directions.kind == "interpolate":
        raise ValueError("recipe: interpolation directions are computed by the CLI only")
    if directions.hessian_ends != "max":
        raise ValueError(
            f"recipe: hessian_ends {directions.hessian_ends!r}; this server computes the top "
            "eigenvectors only (landscape surface --recipe rebuilds it)"
        )
    grid = spec.grid
    fields: dict[str, Any] = {
        "checkpoint": body.get("checkpoint") or _checkpoint_id(recipe),
        "dataset": spec.data.name,
        "grid": {
            "nx": grid.n_x,
            "ny": grid.n_y,
            "nz": grid.n_z,
            "dim": grid.ndim,
            "xrange": list(grid.x_range),
            "yrange": None if grid.y_range is None else list(grid.y_range),
            "zrange": None if grid.z_range is None else list(grid.z_range),
        },
        "directions": {
            "kind": directions.kind,
            "normalization": directions.normalization,
            "ignore": directions.ignore,
            "seed": directions.seed,
        },
        "splits": list(spec.splits),
        "loss": spec.loss,
        "estimate": _estimate(estimate),
        "recipe": recipe,
        "allow_differences": body.get("allow_differences", False),
    }
    if directions.kind == "hessian":
        fields["directions"]["max_lanczos_steps"] = directions.max_lanczos_steps
    if directions.params:
        fields["directions"]["params"] = list(directions.params)
    for name in ("train_size", "test_size"):
        if getattr(spec.data, name) is not None:
            fields[name] = getattr(spec.data, name)
    if body.get("label") is not None:
        fields["label"] = body["label"]
    return fields


def _checkpoint_id(recipe: dict[str, Any]) -> Any:
    """This server's id of the recipe's checkpoint when the recipe came from it, else its
    sha256: the id an upload of the very file the CLI evaluated gets."""
    checkpoint = recipe.get("checkpoint") or {}
    return checkpoint.get("id") or checkpoint.get("sha256")


def _estimate(spec: EstimateSpec | None) -> dict[str, Any] | None:
    if spec is None:
        return None  # exact, as the recipe's surface was
    default = EstimateSpec()
    if (spec.first_stage, spec.level) != (default.first_stage, default.level):
        raise ValueError(
            f"recipe: an estimate with first_stage {spec.first_stage} and level {spec.level}; "
            f"this server estimates with {default.first_stage} and {default.level}"
        )
    kind = "relative" if spec.relative else "absolute"
    return {"target": spec.target, "kind": kind, "seed": spec.seed, "method": spec.method}
