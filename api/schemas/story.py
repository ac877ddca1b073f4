"""Wire models of the skip-vs-plain story: gradient flow of a surface's checkpoint and the
reproduction reports (``landscape.report.reproduce``). Built only by ``api/views.py``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.surface import MAX_SUBSET, JobPublic


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GradientFlowRequest(_Strict):
    """Per-layer gradient norms of a complete surface's checkpoint, at initialization and
    trained, over its training split (He et al. 2016's "gradient highway" as data)."""

    train_size: int | None = Field(
        None, ge=1, le=MAX_SUBSET, description="training subset; default: the surface's"
    )
    mode: Literal["train", "eval"] = Field(
        "train", description="BN with batch statistics (as in training) or running ones"
    )


class GradientFlowProfile(BaseModel):
    """One profile, input first: ``depth[k]`` is 1 nearest the input."""

    names: list[str] = Field(description="parameter names of the conv/linear weights")
    depth: list[int]
    grad_norm: list[float | None] = Field(description="‖∂L/∂W‖ per layer")
    weight_norm: list[float | None] = Field(description="‖W‖ per layer")
    ratio: list[float | None] = Field(description="‖∂L/∂W‖ / ‖W‖ per layer")
    loss: float | None
    n_samples: int
    input_to_output_ratio: float | None = Field(
        description="mean gradient norm of the first quarter of layers over the last quarter"
    )
    settings: dict[str, Any]


class GradientFlowPublic(BaseModel):
    """The stored ``gradient_flow/`` group of a surface."""

    init: GradientFlowProfile | None = Field(description="at the training's initialization")
    trained: GradientFlowProfile | None = Field(description="at the surface's checkpoint")
    checkpoint: str | None
    split: str | None
    train_size: int | None = Field(description="training subset; null: the whole split")


class GradientFlowCreated(BaseModel):
    """202: ``job`` queued (or shared), ``gradient_flow`` null; 200: already stored."""

    job: JobPublic | None
    gradient_flow: GradientFlowPublic | None


class ReportRequest(_Strict):
    """A skip-vs-plain reproduction (docs/reproduce.md); every field left out is the
    documented recipe's value, each capped by this server's limits."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {},
                {"pairs": [["resnet20", "resnet20-noshort"]], "seeds": [0], "epochs": 5},
            ]
        },
    )

    pairs: list[tuple[str, str]] | None = Field(
        None, min_length=1, max_length=4, description="(with shortcuts, without) zoo names"
    )
    seeds: list[int] | None = Field(None, min_length=1, max_length=10)
    epochs: int | None = Field(None, ge=1)
    train_size: int | None = Field(None, ge=1, le=MAX_SUBSET)
    test_size: int | None = Field(None, ge=1, le=MAX_SUBSET)
    ranges: list[tuple[float, int]] | None = Field(
        None, min_length=1, max_length=4, description="(half-width, points per axis) per surface"
    )
    model_args: dict[str, int] | None = Field(None, description="for every net, e.g. width")


class ReportSummary(BaseModel):
    """A report the server holds or computes: ``status`` ``done`` once its files exist."""

    id: str
    status: Literal["done", "pending"]
    recipe: dict[str, Any] = Field(description="the full ReproduceSpec it runs")
    job: JobPublic | None = Field(description="its newest job, null if none is known")
    html: str | None = Field(description="the offline report page, once done")
    wall_time_s: float | None


class ReportCreated(BaseModel):
    """202: ``job`` queued (or shared); 200: the report exists already."""

    job: JobPublic | None
    report: ReportSummary
