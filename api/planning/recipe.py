"""A recipe posted to ``/api/surfaces`` against what this server has: its checkpoint file, the
model it holds, the precision its workers compute in and the library versions.

The request's fields already came from the recipe (``api/schemas/recipe.py``); what is left
is whether this server would give the recipe's numbers. Another checkpoint, model or
precision is a 422 naming every difference unless ``allow_differences``; other library
versions are reported in the reply's ``differences`` and do not stop the job.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from api.db import CheckpointRecord
from api.planning.common import checkpoint_path, declared_precision
from api.schemas.surface import SurfaceRequest
from api.settings import Settings
from landscape.errors import SpecError
from landscape.recipe import Difference, short_digest, version_differences
from landscape.sources.checkpoint import file_digest


def recipe_differences(request: SurfaceRequest, settings: Settings, session: Session) -> list[str]:
    """The differences a request's recipe has from this server, in words (empty without a
    recipe); raises SpecError (422) for those that change the numbers, unless allowed."""
    recipe = request.recipe
    if recipe is None:
        return []
    wanted = (recipe.get("checkpoint") or {}).get("sha256")
    record = session.get(CheckpointRecord, request.checkpoint)
    path = None if record is None else checkpoint_path(settings, record.id, record.format)
    if record is None or path is None or not path.exists():
        raise SpecError(
            f"checkpoint {request.checkpoint!r} of the recipe is not on this server: upload "
            "the checkpoint file (POST /api/checkpoints; its id is the sha256 the recipe "
            "names) or give the id of one from GET /api/checkpoints as checkpoint"
        )
    differences: list[Difference] = []
    if wanted not in (record.id, file_digest(path)):  # an upload is keyed by its bytes
        differences.append(
            Difference(
                "checkpoint bytes (sha256)", short_digest(wanted), short_digest(record.id), True
            )
        )
    model = recipe.get("model") or {}
    if model.get("source", "zoo") == "zoo" and model.get("name") != record.model:
        differences.append(Difference("model", repr(model.get("name")), repr(record.model), True))
    precision = declared_precision(settings, settings.engine_precision)
    if recipe.get("precision", "fp32") != precision:
        differences.append(
            Difference("precision", str(recipe.get("precision")), f"{precision} (workers)", True)
        )
    differences += version_differences(recipe)
    blocking = [str(d) for d in differences if d.blocking]
    if blocking and not request.allow_differences:
        raise SpecError(
            f"this server cannot rebuild the recipe exactly: {'; '.join(blocking)} "
            "(allow_differences: true computes it anyway)"
        )
    return [str(d) for d in differences]
