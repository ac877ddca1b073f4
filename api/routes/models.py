"""``/api/models``: the zoo a surface request may name."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ReadAccess
from api.schemas import ModelPublic
from landscape.models import list_models

router = APIRouter(prefix="/api/models", tags=["catalogue"], dependencies=[ReadAccess])


@router.get("", response_model=list[ModelPublic], summary="Models in the zoo")
def get_models() -> list[ModelPublic]:
    return [ModelPublic(name=m.name, description=m.description) for m in list_models()]
