"""What every job kind's planning shares: where the service keeps checkpoints and surfaces,
which data sets it may read, and the inputs of an analysis of a surface it holds.
"""

from __future__ import annotations

from pathlib import Path

from api.db import SurfaceRecord
from api.settings import Settings
from landscape.data import dataset_info, list_datasets
from landscape.errors import DatasetNotFoundError, SpecError, SurfaceFileError, UnknownNameError
from landscape.specs import (
    DataSpec,
)
from landscape.storage import Surface


def checkpoint_path(settings: Settings, checkpoint_id: str, fmt: str | None = None) -> Path:
    """``<id>.pt`` for landscape checkpoints, ``<id>.onnx`` for ONNX uploads (the suffix tells
    ``landscape.sources.model_source.checkpoint_source`` how to load the file)."""
    suffix = ".onnx" if fmt == "onnx" else ".pt"
    return settings.checkpoints_dir / f"{checkpoint_id}{suffix}"


def surface_path(settings: Settings, surface_id: str) -> Path:
    return settings.surfaces_dir / f"{surface_id}.h5"


def check_dataset(name: str, settings: Settings) -> DataSpec:
    known = [info.name for info in list_datasets(settings.data_root)]
    if name not in known:  # registered names only: a path here would reach the file system
        raise UnknownNameError("data set", name, known)
    info = dataset_info(name, settings.data_root)
    if info.needs_files and not info.available and not settings.allow_download:
        raise DatasetNotFoundError(
            f"data set {name!r} has no files under the server's data folder and downloads are "
            f"off (LANDSCAPE_ALLOW_DOWNLOAD); choose an available one from GET /api/datasets"
        )
    return DataSpec(
        name=name,
        data_root=str(settings.data_root) if info.needs_files else None,
        download=settings.allow_download and info.needs_files,
    )


def analysis_inputs(
    record: SurfaceRecord,
    surface: Surface,
    settings: Settings,
    *,
    analysis: str,
    train_size: int | None,
) -> tuple[Path, DataSpec]:
    """The checkpoint file and data of a surface the service holds, for an ``analysis`` of it
    (Hessian, gradient flow): 409 (SurfaceFileError) while the surface is not complete or its
    checkpoint is gone; the data set resolved against today's data folder, not the file's."""
    cap = settings.max_train_size
    if cap is not None and train_size is not None and train_size > cap:
        raise SpecError(f"train_size must be at most {cap} on this server")
    if surface.status != "complete":
        raise SurfaceFileError(
            f"surface {record.id!r} is {surface.status} ({surface.done} of {surface.total} "
            f"points); the {analysis} needs a complete surface: wait for its job"
        )
    checkpoint = checkpoint_path(settings, record.checkpoint_id)
    if not checkpoint.exists():
        raise SurfaceFileError(
            f"the checkpoint of surface {record.id!r} is no longer on this server"
        )
    base = surface.spec.data
    resolved = check_dataset(base.name, settings)
    data = DataSpec(
        name=base.name,
        data_root=resolved.data_root,
        train_size=train_size or base.train_size,
        test_size=base.test_size,
        download=resolved.download,
    )
    return checkpoint, data
