"""Wire schemas every job kind shares: ids, jobs and their progress, the zoo, data sets,
checkpoints, health and errors (docs/api.md); apart from storage (``api/db.py``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

# Ids are hex digests or uuid4 hex: opaque, never paths.
ID_PATTERN = r"^[0-9a-f]{8,64}$"


class Strict(BaseModel):
    """Request bodies: an unknown field is an error (a typo must not silently do nothing);
    NaN and infinities are refused whatever the guard saw (a schema is the last word on its
    own fields); and types are strict: ``"1"`` or ``true`` is not an integer, ``"0.5"`` not a
    number, ``1`` not a boolean (an integer is still a number). Every request model derives
    from this one."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


def _list_as_tuple(value: Any) -> Any:
    """JSON has no tuples: a list stands for one (strict mode alone refuses a list where a
    tuple is declared); its items are still validated strictly."""
    return tuple(value) if isinstance(value, list) else value


def _an_integer(value: Any) -> Any:
    """``true`` and ``3.0`` equal 1 and 3 to Python, so a ``Literal[1, 2, 3]`` would take them
    even in strict mode: an integer choice is an integer, as every other integer field."""
    if isinstance(value, bool):
        raise ValueError("must be an integer, not true or false")
    if isinstance(value, float):
        raise ValueError(f"must be an integer, not {value!r}")
    return value


# Annotate request fields with these: ``Annotated[tuple[float, float], JsonTuple]``.
JsonTuple = BeforeValidator(_list_as_tuple)
IntChoice = BeforeValidator(_an_integer)  # on a Literal of integers


MAX_SUBSET = 10_000_000  # samples: above any data set landscape reads into memory


class Progress(BaseModel):
    done: int = Field(description="grid points finished (analysis and report jobs: steps)")
    total: int = Field(description="grid points in the surface (analysis and report jobs: steps)")


class TrainProgress(BaseModel):
    """Training of a zoo model before its surface: the grid points stay 0/N meanwhile."""

    epoch: int = Field(description="epochs finished (0 before the first ends)")
    epochs: int = Field(description="epochs in the recipe")
    loss: float | None = Field(None, description="training loss of the last finished epoch")
    acc: float | None = Field(None, description="training accuracy of the last finished epoch")


class JobEstimate(BaseModel):
    """When the fair queue expects a job to run (api/schedule.py, docs/api.md): its estimated
    cost in FLOPs, turned into seconds by a rate this server measured from finished jobs."""

    flops: float | None = Field(description="estimated FLOPs of the whole job; null: unknown")
    seconds: float | None = Field(description="estimated run time; null: unknown")
    position: int | None = Field(
        None, description="queued jobs: 1 = the next to start; null once it runs"
    )
    start_at: str | None = Field(None, description="estimated start (ISO 8601, UTC)")
    end_at: str | None = Field(None, description="estimated end (ISO 8601, UTC); null: unknown")
    lane: Literal["express", "general"] | None = Field(
        None, description="express: short jobs' own worker; general: every other job"
    )
    basis: str = Field(description="how seconds were obtained from FLOPs, in words")


class JobPublic(BaseModel):
    """A job as clients see it; ``surface_id`` is known from the start."""

    id: str
    kind: Literal["surface", "hessian", "gradient_flow", "sharpness", "report"] = Field(
        "surface",
        description="a surface; the Hessian analysis or gradient flow of surface_id; or a "
        "reproduction report (surface_id is then the report's id)",
    )
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    stage: Literal[
        "queued", "training", "directions", "computing", "estimating", "exact", "finished"
    ] = Field(
        description="directions: the Hessian directions' Lanczos run (progress in its steps); "
        "estimating: an estimated surface's stages (progress: points at target); exact: "
        "making one exact (progress: points read whole)"
    )
    stage_detail: str | None = Field(
        None, description="estimating: 'estimate stage k of K'; exact: what it reads"
    )
    progress: Progress
    train: TrainProgress | None = Field(
        None, description="null unless the job trains a model; kept after training ends"
    )
    eta_seconds: float | None
    error: str | None
    surface_id: str | None
    label: str
    cancel_requested: bool = False
    request: dict[str, Any]
    created_at: str
    started_at: str | None
    finished_at: str | None
    estimate: JobEstimate | None = Field(
        None, description="queued and running jobs: position, estimated start and end"
    )


class ModelPublic(BaseModel):
    name: str
    description: str
    source: str = Field("zoo", description="'zoo', or 'plugin <distribution> <version>'")


class LossPublic(BaseModel):
    name: str
    formula: str = Field(description="what the loss computes, per sample")
    source: str = Field(description="'builtin', or 'plugin <distribution> <version>'")


class DatasetPublic(BaseModel):
    name: str
    description: str
    available: bool
    in_channels: int
    image_size: int
    num_classes: int
    default_mode: Literal["explore", "exact"] = Field(
        "exact", description="what a new surface on its whole training split is by default"
    )
    default_mode_reason: str = Field("", description="why, in words (the training split's size)")


class CheckpointPublic(BaseModel):
    id: str
    model: str
    dataset: str
    source: Literal["upload", "trained"]
    format: Literal["landscape", "onnx"] = "landscape"
    filename: str
    created: str
    metadata: dict[str, Any]


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    jobs: dict[str, int]
    workers: int


class ErrorMessage(BaseModel):
    """``detail`` is a plain message, or FastAPI's list of field errors for a malformed body."""

    detail: str | list[dict[str, Any]]


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN: a not-yet-computed point (NaN) or an overflow is sent as null."""
    return value if math.isfinite(value) else None
