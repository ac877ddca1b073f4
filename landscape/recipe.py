"""Recipes: everything that made a surface, written out as JSON, so a figure can be rebuilt.

A recipe is read from what a surface file already stores (docs/format.md): the ``SurfaceSpec``
(serialized by ``specs.to_dict``, the one serializer, and read back by ``specs.from_dict``),
the checkpoint's sha256, the model, the precision, an estimate's settings and the library
versions. ``spec_from_recipe`` turns it back into the spec; ``check_recipe`` names every way a
checkpoint and this installation differ from what made the surface (docs/recipes.md).

Paths are never machine paths: the checkpoint is named by its file name and digest, and the
other checkpoints some directions read (interpolation target, PCA snapshots) by their path
relative to the checkpoint's folder, so a recipe moves with its checkpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from landscape.errors import LandscapeError, SpecError
from landscape.explore.spec import EstimateSpec
from landscape.specs import DataSpec, DirectionSpec, GridSpec, SurfaceSpec, from_dict, to_dict

RECIPE_FORMAT = "landscape-recipe"
RECIPE_VERSION = 1
# How surfaces evaluate BatchNorm: eval mode, the running statistics stored in the checkpoint.
SURFACE_BN_MODE = "eval"


@dataclass(frozen=True)
class Difference:
    """One way a rebuild would differ from the recipe. ``blocking``: the numbers would differ
    (another checkpoint, model, data set or loss); otherwise they should not (versions)."""

    what: str
    recipe: str
    here: str
    blocking: bool

    def __str__(self) -> str:
        return f"{self.what}: recipe {self.recipe}, here {self.here}"


def recipe_of(path: str | Path) -> dict[str, Any]:
    """The recipe of the surface file at ``path`` (partial or complete)."""
    from landscape.storage import read_surface

    path = Path(path)
    surface = read_surface(path)
    attrs = surface.attrs
    spec = surface.spec
    body = to_dict(spec)
    del body["checkpoint"]
    # where the data lives and whether it may be downloaded are the rebuilding machine's choice
    body["data"]["data_root"], body["data"]["download"] = None, False
    body["directions"] = _portable_directions(spec)
    estimate = None if surface.estimate is None else asdict(surface.estimate.spec)
    engine = attrs.get("engine")
    engine = engine if isinstance(engine, Mapping) else {}
    from landscape.data import SPLIT_SEED
    from landscape.storage.summary import json_safe

    recipe = {
        "format": RECIPE_FORMAT,
        "version": RECIPE_VERSION,
        "surface": {
            "key": surface.key,
            "surface_id": attrs.get("surface_id"),  # the service's id; null from the CLI
            "format": attrs.get("format"),
            "status": surface.status,
            "created": attrs.get("created"),
            "points": surface.total,
        },
        "checkpoint": {"file": Path(spec.checkpoint).name, "sha256": _checkpoint_digest(attrs)},
        "model": _model(attrs),
        "spec": body,
        "data_subset": {
            "seed": SPLIT_SEED,
            "rule": "train_size/test_size keep the first n of a fixed permutation seeded "
            "with seed, in original order; null: the whole split",
        },
        "loss": {
            "name": spec.loss,
            "formula": attrs.get("loss_formula"),
            "source": attrs.get("loss_source"),
        },
        "bn": SURFACE_BN_MODE,
        "precision": surface.precision,
        "estimate": estimate,  # EstimateSpec's fields; None: every value a full pass
        "directions_info": attrs.get("directions_info"),
        "train": attrs.get("train_recipe"),
        "computed_on": {
            "device": attrs.get("device"),
            "method": engine.get("method"),
            "points_per_call": engine.get("points_per_call"),
            "batch_size": engine.get("batch_size"),
            "workers": engine.get("workers"),
        },
        "versions": dict(attrs.get("versions") or {}),
    }
    return dict(json_safe(recipe))  # NaN (a diverged Hessian direction's residual) as null


def _checkpoint_digest(attrs: Mapping[str, Any]) -> str | None:
    """The digest of the checkpoint file's bytes (a factory's file has its own attr: its
    ``checkpoint_sha256`` is the module's key)."""
    value = attrs.get("checkpoint_file_sha256") or attrs.get("checkpoint_sha256")
    return None if value is None else str(value)


def _model(attrs: Mapping[str, Any]) -> dict[str, Any]:
    source = str(attrs.get("model_source", "zoo"))
    model: dict[str, Any] = {
        "name": attrs.get("model"),
        "args": dict(attrs.get("model_args") or {}),
        "source": source,
    }
    if source == "factory":
        model["factory"] = attrs.get("model_factory")
    return model


def _portable_directions(spec: SurfaceSpec) -> dict[str, Any]:
    """The directions with their other checkpoints relative to the checkpoint's folder."""
    folder = os.path.dirname(os.path.abspath(spec.checkpoint))

    def relative(value: str) -> str:
        return Path(os.path.relpath(os.path.abspath(value), folder)).as_posix()

    directions = to_dict(spec.directions)
    if spec.directions.target_checkpoint is not None:
        directions["target_checkpoint"] = relative(spec.directions.target_checkpoint)
    directions["trajectory"] = [relative(p) for p in spec.directions.trajectory]
    directions["through_checkpoints"] = [relative(p) for p in spec.directions.through_checkpoints]
    return directions


def load_recipe(path: str | Path) -> dict[str, Any]:
    """A recipe file, checked to be one this library reads."""
    path = Path(path)
    try:
        recipe = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"recipe {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"recipe {path} is not a JSON file: {exc}") from None
    check_format(recipe)
    assert isinstance(recipe, dict)
    return recipe


def check_format(recipe: object) -> None:
    """Refuse anything but a recipe of a version this library reads."""
    if not isinstance(recipe, dict) or recipe.get("format") != RECIPE_FORMAT:
        raise SpecError(
            f'not a recipe: it needs "format": "{RECIPE_FORMAT}" (written by landscape recipe)'
        )
    if recipe.get("version") != RECIPE_VERSION:
        raise SpecError(
            f"recipe version {recipe.get('version')!r} is not one this landscape reads "
            f"(version {RECIPE_VERSION})"
        )
    if not isinstance(recipe.get("spec"), dict) or not isinstance(recipe.get("checkpoint"), dict):
        raise SpecError('a recipe needs a "spec" and a "checkpoint" object')
    for key in ("model", "versions", "estimate"):
        if recipe.get(key) is not None and not isinstance(recipe[key], dict):
            raise SpecError(f'the recipe\'s "{key}" must be an object or null')


def spec_from_recipe(
    recipe: Mapping[str, Any], checkpoint: str | Path | None = None, data_root: str | None = None
) -> SurfaceSpec:
    """The recipe's ``SurfaceSpec`` for ``checkpoint`` (default: the recipe's file name), its
    other checkpoints found relative to the checkpoint's folder."""
    check_format(recipe)
    checkpoint = str(checkpoint if checkpoint is not None else recipe["checkpoint"].get("file"))
    try:
        spec = from_dict(SurfaceSpec, {**recipe["spec"], "checkpoint": checkpoint})
    except LandscapeError as exc:
        raise SpecError(f"the recipe's spec is not valid: {exc}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise SpecError(f"the recipe's spec is malformed: {exc}") from None
    parts = (spec.data, spec.grid, spec.directions)
    if not all(
        isinstance(v, t) for v, t in zip(parts, (DataSpec, GridSpec, DirectionSpec), strict=True)
    ):
        raise SpecError("the recipe's spec is malformed: data, grid and directions are objects")
    _check_fields(spec)
    folder = Path(checkpoint).parent

    def beside(value: str) -> str:
        return str(folder / value)

    target = spec.directions.target_checkpoint
    directions = replace(
        spec.directions,
        target_checkpoint=None if target is None else beside(target),
        trajectory=tuple(beside(p) for p in spec.directions.trajectory),
        through_checkpoints=tuple(beside(p) for p in spec.directions.through_checkpoints),
    )
    return replace(spec, directions=directions, data=replace(spec.data, data_root=data_root))


def _check_fields(spec: SurfaceSpec) -> None:
    """The spec fields its dataclasses take as given (a recipe may come from anywhere)."""
    data, directions = spec.data, spec.directions
    sizes = (data.train_size, data.test_size)
    if not isinstance(data.name, str) or not all(
        n is None or (isinstance(n, int) and not isinstance(n, bool)) for n in sizes
    ):
        raise SpecError("the recipe's data needs a name and integer (or null) subset sizes")
    trajectory = directions.trajectory if isinstance(directions.trajectory, tuple) else (0,)
    target = directions.target_checkpoint
    through = (
        directions.through_checkpoints
        if isinstance(directions.through_checkpoints, tuple)
        else (0,)
    )
    paths = (*trajectory, *through, "" if target is None else target)
    if not all(isinstance(p, str) for p in paths):
        raise SpecError("the recipe's directions name their checkpoints by path")


def estimate_from_recipe(recipe: Mapping[str, Any]) -> EstimateSpec | None:
    """The exploration settings of an estimated surface's recipe; None for an exact one."""
    raw = recipe.get("estimate")
    if raw is None:
        return None
    try:
        return EstimateSpec(**raw)
    except LandscapeError as exc:
        raise SpecError(f"the recipe's estimate is not valid: {exc}") from None
    except TypeError as exc:
        raise SpecError(f"the recipe's estimate is malformed: {exc}") from None


def check_recipe(
    recipe: Mapping[str, Any],
    checkpoint_path: str | Path,
    *,
    factory: str | None = None,
    data_root: str | None = None,
) -> list[Difference]:
    """Every difference between what made the recipe's surface and a rebuild from
    ``checkpoint_path`` here (empty: the rebuild gives the same numbers)."""
    from landscape.sources.checkpoint import file_digest

    spec = spec_from_recipe(recipe, checkpoint_path, data_root)
    path = Path(checkpoint_path)
    if not path.is_file():
        from landscape.errors import CheckpointError

        raise CheckpointError(f"checkpoint {checkpoint_path} does not exist")
    differences: list[Difference] = []
    wanted = recipe.get("checkpoint", {}).get("sha256")
    digest = file_digest(path)
    if wanted != digest:
        differences.append(
            Difference(
                "checkpoint bytes (sha256)", short_digest(wanted), short_digest(digest), True
            )
        )
    differences += model_differences(recipe, path, factory)
    differences += _input_differences(spec)
    differences += version_differences(recipe)
    return differences


def short_digest(digest: object) -> str:
    """The first 16 hex digits of a digest: enough to tell two apart in a message."""
    return f"{str(digest)[:16]}…" if isinstance(digest, str) else repr(digest)


def model_differences(
    recipe: Mapping[str, Any], path: Path, factory: str | None = None
) -> list[Difference]:
    """The model the recipe names against the one the checkpoint (or factory) gives."""
    from landscape.models import list_models

    model = recipe.get("model") or {}
    source, name = model.get("source", "zoo"), model.get("name")
    if source == "python":
        return [Difference("model", f"a Python module ({name})", "a checkpoint file", True)]
    if source == "factory":
        if factory != model.get("factory"):
            return [Difference("model factory", str(model.get("factory")), str(factory), True)]
        return []
    if source == "onnx":
        return []  # the graph is the file: its digest covers the architecture
    known = [info.name for info in list_models()]
    if name not in known:
        return [Difference("model", repr(name), "unknown model (not in this zoo)", True)]
    recorded, args = _recorded_model(path)
    out: list[Difference] = []
    if recorded is not None and recorded != name:
        out.append(Difference("model", repr(name), repr(recorded), True))
    elif recorded is not None and args != dict(model.get("args") or {}):
        shown = [json.dumps(a, sort_keys=True) for a in (model.get("args"), args)]
        out.append(Difference("model arguments", shown[0], shown[1], True))
    return out


def _recorded_model(path: Path) -> tuple[str | None, dict[str, Any]]:
    """The model and builder arguments a landscape checkpoint records; (None, {}) else."""
    from landscape.sources.checkpoint import FORMAT, read_checkpoint_file

    if path.suffix.lower() == ".onnx":
        return None, {}
    content = read_checkpoint_file(path)
    if isinstance(content, dict) and content.get("format") == FORMAT:
        return str(content.get("model")), dict(content.get("model_args") or {})
    return None, {}


def _input_differences(spec: SurfaceSpec) -> list[Difference]:
    """Data set, loss and other checkpoints the rebuild cannot find here."""
    from landscape.data import dataset_info
    from landscape.losses import get_loss

    out: list[Difference] = []
    try:
        dataset_info(spec.data.name, spec.data.data_root)
    except LandscapeError as exc:
        out.append(Difference("data set", repr(spec.data.name), str(exc), True))
    try:
        get_loss(spec.loss)
    except LandscapeError as exc:
        out.append(Difference("loss", repr(spec.loss), str(exc), True))
    others = [
        spec.directions.target_checkpoint,
        *spec.directions.trajectory,
        *spec.directions.through_checkpoints,
    ]
    for other in others:
        if other is not None and not Path(other).is_file():
            out.append(Difference("directions' checkpoint", Path(other).name, "missing", True))
    return out


def version_differences(recipe: Mapping[str, Any]) -> list[Difference]:
    """Library versions of the writer against this installation's (a warning each: the same
    inputs should give the same numbers, but kernels and defaults do change)."""
    from landscape.surface import _versions

    here = _versions()
    stored = recipe.get("versions") or {}
    return [
        Difference(f"{name} version", str(stored.get(name)), here[name], False)
        for name in sorted(here)
        if name in stored and str(stored[name]) != here[name]
    ]
