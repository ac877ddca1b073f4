"""Wire models of sharpness (``/api/surfaces/{id}/sharpness``): λmax of the training loss at
each snapshot of a surface's checkpoint's training (Cohen et al. 2021). Built in
``api/routes/sharpness.py`` from the stored ``sharpness/`` group."""

from __future__ import annotations

from pydantic import BaseModel, Field

from api.schemas.common import MAX_SUBSET, JobPublic, Strict


class SharpnessRequest(Strict):
    """λmax of the mean training loss along the checkpoint's snapshots (the checkpoint alone
    when its training kept none), each Lanczos warm-started from the previous eigenvector."""

    train_size: int | None = Field(
        None, ge=1, le=MAX_SUBSET, description="training subset; default: the surface's"
    )


class SharpnessPoint(BaseModel):
    step: int | None = Field(description="the snapshot's epoch (gd: step)")
    snapshot: str
    lambda_max: float | None = Field(description="top Hessian eigenvalue of the mean loss")
    loss: float | None
    lr: float | None = Field(description="η of a constant-step gd run (2/η is the threshold)")


class SharpnessPublic(BaseModel):
    """The stored ``sharpness/`` group of a surface."""

    points: list[SharpnessPoint]
    checkpoint: str | None
    loss: str | None
    train_size: int | None = Field(description="training subset; null: the whole split")
    snapshots_kept: int | None = Field(
        None,
        description="snapshots the training kept (0: the checkpoint alone is measured); "
        "null: not recorded",
    )
    sampled: bool = Field(
        False,
        description="true when the training kept more snapshots than this server measures "
        "per job (200): the points are then spread evenly over the run, first and last kept",
    )


class SharpnessCreated(BaseModel):
    """202: ``job`` queued (or shared), ``sharpness`` null; 200: already stored."""

    job: JobPublic | None
    sharpness: SharpnessPublic | None
