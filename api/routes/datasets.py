"""``/api/datasets``: registered data sets and whether this server has their files."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ReadAccess, SettingsDep
from api.planning.surface import default_estimate
from api.schemas.common import DatasetPublic
from landscape.data import list_datasets
from landscape.specs import DataSpec

router = APIRouter(prefix="/api/datasets", tags=["catalogue"], dependencies=[ReadAccess])


@router.get("", response_model=list[DatasetPublic], summary="Data sets")
def get_datasets(settings: SettingsDep) -> list[DatasetPublic]:
    """`available` is false for a data set whose files are missing (and downloads are off);
    `default_mode` is explore on more than 10,000 training samples."""
    infos = list_datasets(settings.data_root)
    modes = {info.name: default_estimate(DataSpec(name=info.name)) for info in infos}
    return [
        DatasetPublic(
            name=info.name,
            description=info.description,
            available=info.available or (settings.allow_download and info.needs_files),
            in_channels=info.in_channels,
            image_size=info.image_size,
            num_classes=info.num_classes,
            default_mode="explore" if modes[info.name][0] is not None else "exact",
            default_mode_reason=modes[info.name][1],
        )
        for info in infos
    ]
