"""``/api/models``: the models a surface request may name: the zoo's and installed plugins'."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ReadAccess
from api.schemas.common import ModelPublic
from landscape.models import list_models

router = APIRouter(prefix="/api/models", tags=["catalogue"], dependencies=[ReadAccess])


@router.get("", response_model=list[ModelPublic], summary="Models in the zoo and plugins")
def get_models() -> list[ModelPublic]:
    """`source` says where a model comes from: `zoo`, or `plugin <distribution> <version>`."""
    return [
        ModelPublic(name=m.name, description=m.description, source=m.source) for m in list_models()
    ]
