"""What a surface is, without its arrays: the typed description lists, ``info`` and the API show.

Built from a ``Surface`` already in memory, so a caller that read the file once can both draw
and describe it. The API turns it into its wire spelling in ``api/views.py``; the CLI prints it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from landscape.specs import GridSpec, SurfaceSpec
from landscape.storage.surface_file import Surface

TRAIN_FIELDS = (
    "epochs", "optimizer", "lr", "momentum", "weight_decay", "schedule", "warmup_epochs",
    "batch_size", "seed", "loss",
)  # fmt: skip
FINAL_FIELDS = ("train_loss", "train_acc", "test_loss", "test_acc")
# Root attrs that describe the file itself rather than where its numbers came from.
_NOT_PROVENANCE = frozenset(
    {"format", "encoding-type", "encoding-version", "spec", "status", "key", "generation"}
)


@dataclass(frozen=True)
class Provenance:
    """Where the numbers came from; ``None`` where the file does not know (older files, a
    checkpoint that was not trained by landscape)."""

    train: dict[str, Any] | None  # TRAIN_FIELDS of the recipe that made the checkpoint
    final: dict[str, float | None] | None  # FINAL_FIELDS of that checkpoint, after training
    directions: dict[str, Any]  # kind, normalization, ignore, seed, params
    engine: dict[str, Any]  # device, precision, points per call, workers, wall time, ...
    checkpoint_sha256: str | None


@dataclass(frozen=True)
class SurfaceInfo:
    key: str  # the content key (docs/format.md, "Cache key")
    surface_id: str | None  # the id a service lists it under, when one made it
    status: str
    model: str | None
    dataset: str
    grid: GridSpec
    metrics: tuple[str, ...]
    done: int
    total: int
    nonfinite: int
    created: str | None
    stats: dict[str, float]
    has_trajectory: bool
    precision: str
    spec: SurfaceSpec
    provenance: Provenance
    attrs: dict[str, Any]  # every provenance root attr, as stored

    @property
    def ndim(self) -> int:
        return self.grid.ndim


def describe(surface: Surface) -> SurfaceInfo:
    attrs = surface.attrs
    return SurfaceInfo(
        key=surface.key,
        surface_id=_str_or_none(attrs.get("surface_id")),
        status=surface.status,
        model=_str_or_none(attrs.get("model")),
        dataset=surface.spec.data.name,
        grid=surface.spec.grid,
        metrics=surface.spec.metric_names,
        done=surface.done,
        total=surface.total,
        nonfinite=surface.nonfinite,
        created=_str_or_none(attrs.get("created")),
        stats=dict(surface.metrics),
        has_trajectory=surface.trajectory is not None,
        precision=surface.precision,
        spec=surface.spec,
        provenance=_provenance(surface),
        attrs={k: v for k, v in attrs.items() if k not in _NOT_PROVENANCE},
    )


def _provenance(surface: Surface) -> Provenance:
    attrs = surface.attrs
    recipe = attrs.get("train_recipe")
    final = attrs.get("train_final")
    engine = dict(attrs.get("engine") or {})
    engine.setdefault("precision", surface.precision)
    for name in ("device", "wall_time_s"):
        if attrs.get(name) is not None:
            engine.setdefault(name, attrs[name])
    directions = surface.spec.directions
    return Provenance(
        train=_recipe_fields(recipe) if isinstance(recipe, dict) else None,
        final={k: _finite(final.get(k)) for k in FINAL_FIELDS} if isinstance(final, dict) else None,
        directions={
            "kind": directions.kind,
            "normalization": directions.normalization,
            "ignore": directions.ignore,
            "seed": directions.seed,
            "params": list(directions.params),  # empty: every parameter
        },
        engine=engine,
        checkpoint_sha256=_str_or_none(attrs.get("checkpoint_sha256")),
    )


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def json_safe(value: Any) -> Any:
    """NaN/inf are not JSON: they become null (the API and ``landscape info --json`` alike)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _recipe_fields(recipe: dict[str, Any]) -> dict[str, Any]:
    """TRAIN_FIELDS of a stored recipe; one from before losses were chosen used cross-entropy."""
    fields = {k: recipe.get(k) for k in TRAIN_FIELDS}
    fields["loss"] = recipe.get("loss", "cross_entropy")
    return fields
