"""``/api/checkpoints``: list, and upload a trained model safely.

Uploads are never unpickled: ``landscape.sources.checkpoint.load_checkpoint`` reads ``.pt``
files with ``torch.load(weights_only=True)`` (tensors and plain containers only) or
safetensors. The file must load strictly into the named zoo model built for the named data
set; it is then stored in our own checkpoint format under ``checkpoints/<id>.pt`` (id = sha256
of the uploaded bytes), so workers rebuild the model from the file alone.

An ``.onnx`` upload carries its own architecture as a declarative graph: it is checked by
``landscape.sources.onnx_import.load_onnx_model`` for the data set's sample shape (no custom
operators, no external data, a conversion that reproduces ONNX Runtime) and stored as it came under
``checkpoints/<id>.onnx``; workers convert and check it again. TorchScript, ``torch.export``
and pickled modules are refused: their loaders can unpickle or run code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Header, HTTPException, UploadFile
from sqlalchemy import select

from api.db import CheckpointRecord
from api.deps import ReadAccess, SessionDep, SettingsDep, WriteAccess, error_responses
from api.job_wire import iso
from api.planning.common import checkpoint_path
from api.redact import truncate_value
from api.schemas.common import CheckpointPublic
from landscape.data import dataset_info, list_datasets
from landscape.errors import CheckpointError, LandscapeError, ModelFormatError, UnknownNameError
from landscape.models import build, list_models
from landscape.sources.checkpoint import load_checkpoint, recorded_model, save_checkpoint
from landscape.sources.safe_load import check_unpacked_size

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/checkpoints", tags=["checkpoints"], dependencies=[ReadAccess])

SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".onnx")
ONNX_MODEL = "onnx"  # the model name an ONNX checkpoint is listed under
_COPY_CHUNK = 1 << 20
# Metadata is shown on every listing: only these keys, each small, are kept from a file.
METADATA_KEYS = (
    "model", "model_args", "dataset", "data", "train_spec", "seed", "epochs", "train_samples",
    "test_samples", "train_loss", "train_acc", "test_loss", "test_acc", "device", "wall_time_s",
    "uploaded_as", "sha256", "format", "onnx_check",
)  # fmt: skip
# A file may unpack to this multiple of the model's own tensor bytes (optimizer state, buffers)
# plus a constant, and never to more than the server's limit.
UNPACKED_FACTOR, UNPACKED_SLACK = 4, 16 * 1024 * 1024


def small_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The whitelisted keys of ``metadata``, each cut to a few hundred bytes."""
    kept = {key: metadata[key] for key in METADATA_KEYS if key in metadata}
    return truncate_value(kept, max_chars=200, max_items=20, depth=3)  # type: ignore[no-any-return]


def checkpoint_public(record: CheckpointRecord) -> CheckpointPublic:
    return CheckpointPublic(
        id=record.id,
        model=record.model,
        dataset=record.dataset,
        source=record.source,
        format="onnx" if record.format == "onnx" else "landscape",
        filename=record.filename,
        created=iso(record.created_at) or "",
        metadata=small_metadata(record.details or {}),
    )


@router.get("", response_model=list[CheckpointPublic], summary="Checkpoints, newest first")
def list_checkpoints(session: SessionDep) -> list[CheckpointPublic]:
    """Uploaded ones and the ones workers trained for zoo requests; use `id` as `checkpoint`."""
    newest_first = select(CheckpointRecord).order_by(CheckpointRecord.created_at.desc())
    records = session.scalars(newest_first)
    return [checkpoint_public(record) for record in records]


def _copy_limited(upload: UploadFile, dest: Path, limit: int) -> str:
    """Copy at most ``limit`` bytes (413 beyond); returns the sha256 of what was copied."""
    digest, size = hashlib.sha256(), 0
    with dest.open("wb") as out:
        while chunk := upload.file.read(_COPY_CHUNK):
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"upload larger than this server's limit of {limit} bytes")
            digest.update(chunk)
            out.write(chunk)
    if size == 0:
        raise CheckpointError("the uploaded file is empty")
    return digest.hexdigest()


def _json_safe(value: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(value, default=str))  # type: ignore[no-any-return]


def _unpacked_limit(settings: SettingsDep, model: str, shape: dict[str, int]) -> int:
    """How many bytes an upload for ``model`` may unpack to (checked before reading it)."""
    tensors = build(model, **shape).state_dict().values()
    own = sum(t.numel() * t.element_size() for t in tensors)
    return int(min(settings.max_checkpoint_unpacked_bytes, UNPACKED_FACTOR * own + UNPACKED_SLACK))


@router.post(
    "",
    status_code=201,
    response_model=CheckpointPublic,
    dependencies=[WriteAccess],
    responses=error_responses(401, 413, 422),
    summary="Upload a checkpoint",
)
def upload_checkpoint(
    settings: SettingsDep,
    session: SessionDep,
    file: Annotated[
        UploadFile,
        File(
            description="`.pt`/`.pth` state_dict or landscape checkpoint, `.safetensors`, "
            "or an `.onnx` graph (architecture and weights, no code)"
        ),
    ],
    model: Annotated[
        str | None, Form(max_length=100, description="zoo model name (not for `.onnx`)")
    ] = None,
    dataset: Annotated[str, Form(max_length=100, description="data set it was trained on")] = (
        "digits"
    ),
    content_length: Annotated[int | None, Header(include_in_schema=False)] = None,
) -> CheckpointPublic:
    """Validated by building `model` for `dataset`'s shape and loading the weights strictly:
    a mismatch is a 422 naming the first differing tensor. An `.onnx` file is validated by
    converting it and comparing the module with ONNX Runtime on the data set's sample shape:
    custom operators, external data, malformed graphs, graphs over the cost limits and inexact
    conversions are 422s. Identical uploads give the same id: the same bytes with the same
    model and data set answer the earlier record; with another data set they are checked for
    it and the record names it from then on; as another model they are a 422."""
    if content_length is not None and content_length > settings.max_upload_bytes + 65536:
        raise HTTPException(
            413, f"upload larger than this server's limit of {settings.max_upload_bytes} bytes"
        )
    datasets = [d.name for d in list_datasets(settings.data_root)]
    if dataset not in datasets:
        raise UnknownNameError("data set", dataset, datasets)
    name = Path(file.filename or "upload.pt").name
    suffix = Path(name).suffix.lower()
    if suffix not in SUFFIXES:
        raise CheckpointError(f"file {name!r} must end in one of: {', '.join(SUFFIXES)}")
    if suffix == ".onnx":
        return _upload_onnx(settings, session, file, name, dataset)
    models = [m.name for m in list_models()]
    if model is not None and model not in models:
        raise UnknownNameError("model", model, models)
    info = dataset_info(dataset, settings.data_root)
    settings.ensure_dirs()
    with tempfile.TemporaryDirectory(dir=settings.checkpoints_dir) as tmp_dir:
        tmp = Path(tmp_dir) / f"upload{suffix}"
        checkpoint_id = _copy_limited(file, tmp, settings.max_upload_bytes)
        if model is None:  # a `landscape train` checkpoint names its own model
            model = _recorded_model(settings, tmp, name, models)
        existing = session.get(CheckpointRecord, checkpoint_id)
        if existing is not None and checkpoint_path(settings, checkpoint_id).exists():
            if existing.model != model:
                raise CheckpointError(
                    f"file {name!r} is already checkpoint {checkpoint_id} of model "
                    f"{existing.model!r}; its id is the digest of its bytes, and surfaces are "
                    "keyed by that id, so the same bytes cannot also be another model"
                )
            if existing.dataset == dataset:
                return checkpoint_public(existing)
        shape = info.model_shape()
        check_unpacked_size(tmp, _unpacked_limit(settings, model, shape))
        try:
            net, metadata = load_checkpoint(tmp, model_name=model, model_args=shape)
        except LandscapeError:
            raise
        except Exception as exc:  # untrusted bytes: any reader failure is the file's fault
            log.info("upload %s rejected: %r", name, exc)
            raise CheckpointError(f"cannot read {name!r} as a checkpoint: {exc}") from exc
        # Cut to a few levels before anything walks it: a pickle can nest lists 200,000 deep
        # without recursing, and json or torch.save would then recurse past Python's limit.
        metadata = small_metadata({**metadata, "uploaded_as": name, "sha256": checkpoint_id})
        converted = Path(tmp_dir) / "converted.pt"
        save_checkpoint(
            converted,
            net,
            model_name=model,
            model_args=metadata.get("model_args", shape),
            metadata=metadata,
        )
        shutil.move(converted, checkpoint_path(settings, checkpoint_id))
    record = CheckpointRecord(
        id=checkpoint_id,
        model=model,
        dataset=dataset,
        source="upload",
        filename=name,
        details=metadata,
    )
    stored = session.merge(record)
    session.commit()
    return checkpoint_public(stored)


def _recorded_model(settings: SettingsDep, path: Path, name: str, models: list[str]) -> str:
    """The zoo model the uploaded file records, read safely (``weights_only``, after the
    server-wide unpacked-size cap); a bare state_dict must be named in the form."""
    check_unpacked_size(path, settings.max_checkpoint_unpacked_bytes)
    recorded = recorded_model(path)
    if recorded is None:
        raise CheckpointError(
            f"file {name!r} holds weights only (a bare state_dict): name its architecture in "
            f"the form field 'model' (one of: {', '.join(models)})"
        )
    if recorded not in models:
        raise UnknownNameError("model", recorded, models)
    return recorded


def _upload_onnx(
    settings: SettingsDep, session: SessionDep, file: UploadFile, name: str, dataset: str
) -> CheckpointPublic:
    """Check the graph (``load_onnx_model``) and keep the file as it came with its report."""
    from landscape.sources.onnx_import import load_onnx_model
    from landscape.sources.onnx_limits import OnnxLimits

    if importlib.util.find_spec("onnx2torch") is None:
        raise CheckpointError(
            "this server does not accept .onnx uploads (its install lacks the 'onnx' extra)"
        )
    info = dataset_info(dataset, settings.data_root)
    sample = info.sample_shape
    limit = min(settings.max_upload_bytes, settings.max_onnx_bytes)
    settings.ensure_dirs()
    with tempfile.TemporaryDirectory(dir=settings.checkpoints_dir) as tmp_dir:
        tmp = Path(tmp_dir) / "upload.onnx"
        checkpoint_id = _copy_limited(file, tmp, limit)
        final = checkpoint_path(settings, checkpoint_id, "onnx")
        existing = session.get(CheckpointRecord, checkpoint_id)
        if existing is not None and final.exists() and existing.dataset == dataset:
            return checkpoint_public(existing)
        limits = OnnxLimits(max_bytes=limit)
        module, report = load_onnx_model(tmp, sample_input_shape=sample, limits=limits)
        _check_classes(module, sample, info.num_classes, dataset)
        shutil.move(tmp, final)
    details = _json_safe(
        {
            "format": "onnx",
            "uploaded_as": name,
            "sha256": checkpoint_id,
            "onnx_check": report["check"],
            "onnx": report,
        }
    )
    record = CheckpointRecord(
        id=checkpoint_id,
        model=ONNX_MODEL,
        dataset=dataset,
        source="upload",
        format="onnx",
        filename=name,
        details=details,
    )
    stored = session.merge(record)
    session.commit()
    return checkpoint_public(stored)


def _check_classes(module: Any, sample: tuple[int, ...], n_classes: int, dataset: str) -> None:
    """Logits for every class of the data set, so a surface request cannot fail later."""
    import torch

    with torch.inference_mode():
        out = module(torch.zeros((1, *sample)))
    if out.dim() != 2 or out.shape[1] < n_classes:
        raise ModelFormatError(
            f"the ONNX graph outputs {tuple(out.shape[1:])} per sample; data set {dataset!r} "
            f"has {n_classes} classes, so it needs logits of shape (batch, >= {n_classes})"
        )
