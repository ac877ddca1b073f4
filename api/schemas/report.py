"""Wire models of the skip-vs-plain reproduction reports (``/api/reports``,
``landscape.report.reproduce``). Built only by ``api/views.py``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import MAX_SUBSET, JobPublic, JsonTuple, Strict
from landscape.specs import MAX_ABS_COORDINATE, Precision

ModelName = Annotated[str, Field(max_length=100)]
Pair = Annotated[tuple[ModelName, ModelName], JsonTuple]
HalfWidth = Annotated[float, Field(gt=0, le=MAX_ABS_COORDINATE)]
Points = Annotated[int, Field(ge=3, le=100001)]
Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]
FamilyName = Literal["resnet", "highway", "transformer", "recurrent"]  # report.recipe.FAMILIES


class ReportRequest(Strict):
    """A skip-vs-plain reproduction (docs/reproduce.md); every field left out is the
    documented recipe's value, each capped by this server's limits and budgets; model
    arguments are checked against every net's own (``landscape.models.check_model_args``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {},
                {"family": "transformer", "quick": True},
                {"pairs": [["resnet20", "resnet20-noshort"]], "seeds": [0], "epochs": 5},
            ]
        },
    )

    family: FamilyName = Field(
        "resnet",
        description="whose identity path is on trial: resnet shortcuts, highway gates, the "
        "Transformer's residual stream or the LSTM's and GRU's gates through time",
    )
    quick: bool = Field(False, description="the family's smaller recipe (docs/reproduce.md)")
    pairs: list[Pair] | None = Field(
        None, min_length=1, max_length=4, description="(with shortcuts, without) zoo names"
    )
    seeds: list[Seed] | None = Field(None, min_length=1, max_length=10)
    epochs: int | None = Field(None, ge=1, description="limited by the server")
    train_size: int | None = Field(None, ge=1, le=MAX_SUBSET)
    test_size: int | None = Field(None, ge=1, le=MAX_SUBSET)
    ranges: list[Annotated[tuple[HalfWidth, Points], JsonTuple]] | None = Field(
        None, min_length=1, max_length=4, description="(half-width, points per axis) per surface"
    )
    model_args: dict[Annotated[str, Field(max_length=100)], int] | None = Field(
        None,
        max_length=16,
        description="for every net, e.g. width (checked per model); added to or replacing "
        "the family's own (highway: gate_bias -4)",
    )
    precision: Precision | None = Field(
        None,
        description="the surfaces' precision (default the recipe's fp32; tf32 and bf16 need "
        "CUDA workers, auto is tf32 on them); training, Hessian and gradient flow are fp32. "
        "Part of the report's id",
    )


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
