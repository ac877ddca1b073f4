"""What every job kind's planning shares: where the service keeps checkpoints and surfaces,
which data sets it may read, the inputs of an analysis of a surface it holds, and the precision
it declares.

A stored plan says *what* a job computes (specs and a declared precision, which enters the
surface id), never *where*: the API of a GPU deployment runs on a CPU, so device and engine
processes are set by the worker executing the plan (``api/runners/base.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from api.db import SurfaceRecord
from api.settings import Settings
from landscape.data import dataset_info, list_datasets
from landscape.engine.devices import resolve_device
from landscape.engine.plan import resolve_precision
from landscape.errors import DatasetNotFoundError, SpecError, SurfaceFileError, UnknownNameError
from landscape.specs import DataSpec, EngineOptions, Precision, ResolvedPrecision, to_dict
from landscape.storage import Surface

# Fields of library specs that say where a job runs; the worker fills them in from its settings.
WHERE_FIELDS = frozenset({"device", "workers"})


def stored_spec(spec: Any) -> dict[str, Any]:
    """``to_dict(spec)`` without the fields saying where it runs, as a job's plan stores it:
    a value there would be the API's, not the worker's (rebuilt with their defaults)."""
    return {key: value for key, value in to_dict(spec).items() if key not in WHERE_FIELDS}


def compute_device(settings: Settings) -> torch.device:
    """The device the service's workers compute on (``LANDSCAPE_COMPUTE_DEVICE``). A named
    device is taken as said, not probed: the API process of a GPU deployment has no GPU."""
    if settings.compute_device == "auto":  # API and workers are one process (landscape serve)
        return resolve_device(settings.device)
    return torch.device(settings.compute_device)


def declared_precision(settings: Settings, requested: Precision) -> ResolvedPrecision:
    """The precision a job declares (and its id names): ``requested`` resolved against the
    workers' compute device, so ``auto`` is tf32 for GPU workers even when planned on a CPU."""
    device = compute_device(settings)
    try:
        return resolve_precision(EngineOptions(precision=requested), device)
    except SpecError as exc:
        raise SpecError(
            f"{exc} (the service's compute device, LANDSCAPE_COMPUTE_DEVICE, is {device.type})"
        ) from exc


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
