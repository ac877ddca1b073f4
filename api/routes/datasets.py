"""``/api/datasets``: registered data sets and whether this server has their files."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ReadAccess, SettingsDep
from api.schemas.common import DatasetPublic
from landscape.data import list_datasets

router = APIRouter(prefix="/api/datasets", tags=["catalogue"], dependencies=[ReadAccess])


@router.get("", response_model=list[DatasetPublic], summary="Data sets")
def get_datasets(settings: SettingsDep) -> list[DatasetPublic]:
    """`available` is false for a data set whose files are missing (and downloads are off)."""
    return [
        DatasetPublic(
            name=info.name,
            description=info.description,
            available=info.available or (settings.allow_download and info.needs_files),
            in_channels=info.in_channels,
            image_size=info.image_size,
            num_classes=info.num_classes,
        )
        for info in list_datasets(settings.data_root)
    ]
