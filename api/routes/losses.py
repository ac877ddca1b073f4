"""``/api/losses``: the losses a surface request may name: built-ins and installed plugins."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ReadAccess
from api.schemas.common import LossPublic
from landscape.losses import list_losses

router = APIRouter(prefix="/api/losses", tags=["catalogue"], dependencies=[ReadAccess])


@router.get("", response_model=list[LossPublic], summary="Built-in and plugin losses")
def get_losses() -> list[LossPublic]:
    """`formula` is each loss per sample (docs/losses.md); `source` is `builtin`, or
    `plugin <distribution> <version>`. A request names one by `name`."""
    return [LossPublic(name=x.name, formula=x.formula, source=x.source) for x in list_losses()]
