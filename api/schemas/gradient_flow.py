"""Wire models of gradient flow (``/api/surfaces/{id}/gradient-flow``): per-layer gradient
norms of a surface's checkpoint at initialization and trained. Built only by ``api/views.py``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from api.schemas.common import MAX_SUBSET, JobPublic, Strict


class GradientFlowRequest(Strict):
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
    time_grad_norm: list[float | None] | None = Field(
        None, description="recurrent nets: ‖∂L/∂h_t‖ per time step, first step first"
    )
    through_time_ratio: float | None = Field(
        None, description="recurrent nets: mean of the first quarter of steps over the last"
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
