"""Wire schemas of surfaces (``/api/surfaces``): the request (model, data set, training
recipe, grid, directions) and what clients read back (summary, provenance, arrays).

Request models check shape and single-field ranges; checks that need settings or the library
(grid size limit, known model/data set/checkpoint) happen in ``api/planning/surface.py`` and
surface as 422 ``{"detail": "<message>"}`` through the one LandscapeError handler.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.schemas.common import ID_PATTERN, MAX_SUBSET, IntChoice, JobPublic, JsonTuple, Strict
from api.schemas.hessian import HessianBrief, HessianPublic
from api.schemas.recipe import request_fields
from landscape.errors import SpecError
from landscape.explore.spec import EstimateSpec
from landscape.losses import PYTHON_PREFIX, get_loss
from landscape.specs import (
    DEFAULT_DIRECTION_STEPS,
    MAX_ABS_COORDINATE,
    MAX_LANCZOS_STEPS,
    DirectionSpec,
    Ignore,
    Normalization,
    OptimizerName,
    ScheduleName,
    Split,
    TrainSpec,
)

MAX_PARAM_PATTERNS = 32  # name patterns of one parameter subset

EXAMPLE_REQUEST: dict[str, Any] = {
    "model": "resnet20-noshort",
    "dataset": "digits",
    "train": {"epochs": 10},
    "grid": {"nx": 21, "ny": 21, "xrange": [-1, 1], "yrange": [-1, 1]},
    "directions": {"normalization": "filter", "ignore": "biasbn", "seed": 0},
}


def _recipe_default(name: str) -> Any:
    """The library's default for a ``TrainSpec`` field: one place for each number."""
    return {f.name: f.default for f in dataclasses.fields(TrainSpec)}[name]


class TrainRecipe(Strict):
    """How the worker trains a zoo model before computing its surface (He et al. 2016 §4.2)."""

    epochs: int = Field(
        _recipe_default("epochs"), ge=1, description="training epochs (limited by the server)"
    )
    batch_size: int = Field(_recipe_default("batch_size"), ge=1, le=65536)
    optimizer: OptimizerName = _recipe_default("optimizer")
    lr: float = Field(_recipe_default("lr"), gt=0, le=100)
    momentum: float = Field(_recipe_default("momentum"), ge=0, le=1)
    weight_decay: float = Field(_recipe_default("weight_decay"), ge=0, le=1)
    schedule: ScheduleName = _recipe_default("schedule")
    warmup_epochs: int = Field(
        _recipe_default("warmup_epochs"),
        ge=0,
        description="epochs at lr/10 before the schedule (He et al.'s ResNet-110 warm-up)",
    )
    seed: int = Field(_recipe_default("seed"), ge=0, le=2**31 - 1)
    loss: str | None = Field(
        None,
        max_length=200,
        description="the training loss, a name from GET /api/losses (null: the surface's loss)",
    )

    @field_validator("loss")
    @classmethod
    def _registered_loss(cls, value: str | None) -> str | None:
        return None if value is None else registered_loss(value)


def registered_loss(value: str) -> str:
    """Registered names only (built-ins, installed plugins): the service never runs code a
    client sends, so a Python callable's ``python:`` identity is refused here."""
    if value.startswith(PYTHON_PREFIX):
        raise ValueError(f"loss {value!r}: a Python callable runs only in-process")
    return get_loss(value).name


def _check_range(value: tuple[float, float] | None, name: str) -> tuple[float, float] | None:
    if value is not None and not value[0] < value[1]:
        raise ValueError(f"{name} must be [min, max] with min < max, got {list(value)}")
    return value


Coordinate = Annotated[float, Field(ge=-MAX_ABS_COORDINATE, le=MAX_ABS_COORDINATE)]
Range = Annotated[tuple[Coordinate, Coordinate], JsonTuple]


class GridRequest(Strict):
    """Grid of coordinates along the two directions; ``ny: null`` or ``dim: 1`` gives a curve,
    ``nz`` (or ``dim: 3``) a volume along a third direction."""

    nx: int = Field(21, ge=2, le=100001, description="points along x")
    ny: int | None = Field(21, ge=2, le=100001, description="points along y; null for 1D")
    xrange: Range = Field((-1.0, 1.0), description="[min, max] of x, min < max")
    yrange: Range | None = Field((-1.0, 1.0), description="[min, max] of y, min < max; null for 1D")
    nz: int | None = Field(None, ge=2, le=100001, description="points along z; null unless 3D")
    zrange: Range | None = Field(
        None, description="[min, max] of z, min < max (3D; default: xrange)"
    )
    dim: Annotated[Literal[1, 2, 3], IntChoice] | None = Field(
        None, description="1 for a curve, 3 for a volume; default from ny and nz"
    )

    @field_validator("xrange")
    @classmethod
    def _x_ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        return _check_range(value, "xrange")  # type: ignore[return-value]

    @field_validator("yrange")
    @classmethod
    def _y_ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        return _check_range(value, "yrange")

    @field_validator("zrange")
    @classmethod
    def _z_ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        return _check_range(value, "zrange")

    @model_validator(mode="after")
    def _one_two_or_three_dims(self) -> GridRequest:
        volume = self.dim == 3 or (self.dim is None and self.nz is not None)
        if not volume and (self.nz is not None or self.zrange is not None):
            raise ValueError(f"nz and zrange make a volume: they need dim 3, not {self.dim}")
        if volume and self.ny is None:
            raise ValueError("a 3D grid needs ny too")
        if self.dim == 1 or self.ny is None:
            self.dim, self.ny, self.yrange = 1, None, None
        else:
            self.dim = 3 if volume else 2
            if self.yrange is None:
                self.yrange = (-1.0, 1.0)
        if self.dim == 3:
            self.nz = self.nz or self.nx
            self.zrange = self.zrange or self.xrange
        else:
            self.nz, self.zrange = None, None
        return self

    @property
    def points(self) -> int:
        """Grid points to compute: what the server's limit counts."""
        return self.nx * (self.ny or 1) * (self.nz or 1)


class DirectionsRequest(Strict):
    """Random directions, normalized per filter (Li et al. 2018 §4) unless asked otherwise;
    ``pca``: the top-2 principal directions of the training trajectory (Li et al. 2018 §7),
    for a zoo ``model`` only (it is trained with per-epoch snapshots); ``hessian``: the top-2
    Hessian eigenvectors of the first split's loss (the sharpest plane), scaled by the weights'
    norm (unit length with normalization ``none``), Lanczos seeded by ``seed``."""

    kind: Literal["random", "pca", "hessian"] = "random"
    normalization: Normalization = "filter"
    ignore: Ignore = "biasbn"
    seed: int = Field(0, ge=0, le=2**31 - 1)
    max_lanczos_steps: int | None = Field(
        None,
        ge=2,
        le=MAX_LANCZOS_STEPS,
        description=f"kind hessian: at most this many Lanczos steps (default "
        f"{DEFAULT_DIRECTION_STEPS}), fewer once the eigenvectors converge",
    )
    params: list[str] = Field(
        default_factory=list,
        max_length=MAX_PARAM_PATTERNS,
        description="only these parameters move, the rest stay fixed: fnmatch globs over "
        "named_parameters() names (['layer3.*']) or 'trainable'; empty: all. A pattern that "
        "matches no parameter of the model is a 422 naming some that exist",
    )

    @field_validator("params")
    @classmethod
    def _pattern_form(cls, value: list[str]) -> list[str]:
        try:
            DirectionSpec(params=tuple(value))  # the library's form checks, one place
        except SpecError as exc:
            raise ValueError(str(exc)) from None
        return value


EXPLORE_DEFAULT_TARGET = 0.05  # the default exploration target: ±5 % of each point's loss


class ExploreTarget(Strict):
    """Exploration mode: each point is an estimate from a shared seeded subsample, sampled
    until its 95 % interval's half-width is within ``target`` (docs/format.md, "Estimated
    surfaces"); ``POST /api/surfaces/{id}/exact`` finishes it."""

    target: float = Field(
        EXPLORE_DEFAULT_TARGET,
        gt=0,
        description="relative: a fraction of each point's loss (0.05 = ±5 %), below 1; "
        "absolute: a loss",
    )
    kind: Literal["relative", "absolute"] = "relative"
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the shared sample order")
    method: Literal["fitted", "difference"] = Field(
        "fitted", description="fitted: regression estimator; difference: plain difference"
    )

    @model_validator(mode="after")
    def _library_accepts(self) -> ExploreTarget:
        try:
            self.spec()
        except SpecError as exc:
            raise ValueError(str(exc)) from None
        return self

    def spec(self) -> EstimateSpec:
        return EstimateSpec(
            target=self.target,
            relative=self.kind == "relative",
            seed=self.seed,
            method=self.method,
        )


class SurfaceRequest(Strict):
    """A surface to compute: a zoo ``model`` (trained first) or an uploaded ``checkpoint`` id."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_REQUEST]})

    model: str | None = Field(None, max_length=100, description="zoo name, see GET /api/models")
    checkpoint: str | None = Field(
        None, pattern=ID_PATTERN, description="checkpoint id from GET /api/checkpoints"
    )
    dataset: str | None = Field(
        None,
        max_length=100,
        description="data set name (GET /api/datasets); default digits, "
        "or the checkpoint's data set",
    )
    train: TrainRecipe | None = Field(None, description="training recipe for a zoo model")
    train_size: int | None = Field(
        None, ge=1, le=MAX_SUBSET, description="deterministic training subset"
    )
    test_size: int | None = Field(
        None, ge=1, le=MAX_SUBSET, description="deterministic test subset"
    )
    grid: GridRequest = Field(default_factory=GridRequest)
    directions: DirectionsRequest = Field(default_factory=DirectionsRequest)
    splits: list[Split] = Field(["train"], min_length=1, max_length=2)
    loss: str = Field(
        "cross_entropy", max_length=200, description="a loss name from GET /api/losses"
    )
    label: str | None = Field(None, max_length=200, description="display name")
    estimate: ExploreTarget | None = Field(
        None,
        description="exploration mode (an estimate per point with its error); null: exact "
        "(every point a full pass); absent: explore at ±5 % on data with more than 10,000 "
        "training samples, else exact (the reply's mode says which)",
    )
    recipe: dict[str, Any] | None = Field(
        None,
        description="a recipe (landscape recipe, GET /api/surfaces/{id}/recipe): it sets "
        "every field but checkpoint (default: the recipe's) and label (docs/recipes.md)",
    )
    allow_differences: bool = Field(
        False, description="with recipe: compute even when this server's checkpoint, model or "
        "precision differs from the recipe's",
    )  # fmt: skip

    @model_validator(mode="before")
    @classmethod
    def _recipe_fields(cls, data: Any) -> Any:
        """A recipe is the request it spells out (api/schemas/recipe.py)."""
        if isinstance(data, dict) and data.get("recipe") is not None:
            return request_fields(data)
        return data

    @field_validator("loss")
    @classmethod
    def _registered_loss(cls, value: str) -> str:
        return registered_loss(value)

    @model_validator(mode="after")
    def _model_or_checkpoint(self) -> SurfaceRequest:
        if (self.model is None) == (self.checkpoint is None):
            raise ValueError("give exactly one of 'model' (a zoo name) or 'checkpoint' (an id)")
        if self.checkpoint is not None and self.train is not None:
            raise ValueError("'train' goes with 'model'; a checkpoint is already trained")
        if len(set(self.splits)) != len(self.splits):
            raise ValueError(f"splits must not repeat, got {self.splits}")
        if self.directions.kind == "pca":
            if self.checkpoint is not None:
                raise ValueError(
                    "directions.kind 'pca' needs the training trajectory, which an uploaded "
                    "checkpoint does not have: give a zoo 'model' (trained here with per-epoch "
                    "snapshots) or use directions.kind 'random'"
                )
            if self.train is not None and self.train.epochs < 2:
                raise ValueError(
                    "directions.kind 'pca' needs train.epochs >= 2 (at least 3 snapshots: "
                    "the start and every epoch)"
                )
        return self


class GridPublic(BaseModel):
    nx: int
    ny: int | None
    xrange: list[float]
    yrange: list[float] | None
    nz: int | None = Field(None, description="points along z of a volume; else null")
    zrange: list[float] | None = None


class TrainRecipePublic(BaseModel):
    """The recipe that trained the surface's checkpoint (every key present, null if unknown)."""

    epochs: int | None
    optimizer: str | None
    lr: float | None
    momentum: float | None
    weight_decay: float | None
    schedule: str | None
    warmup_epochs: int | None
    batch_size: int | None
    seed: int | None
    loss: str | None


class FinalNumbersPublic(BaseModel):
    """The trained checkpoint's final numbers over each whole split (null if unknown)."""

    train_loss: float | None
    train_acc: float | None
    test_loss: float | None
    test_acc: float | None


class DirectionsPublic(BaseModel):
    kind: str
    normalization: str
    ignore: str
    seed: int
    eigenvalues: list[float] | None = Field(
        None, description="kind hessian: the Hessian eigenvalues along x and y (else null)"
    )
    hessian_ends: str = Field(
        "max", description="kind hessian: max (top eigenvectors), min (bottom) or max,min"
    )
    params: list[str] = Field(
        default_factory=list,
        description="the parameter subset the directions move (name globs, 'trainable'); "
        "empty: every parameter",
    )


class ProvenancePublic(BaseModel):
    """Where a surface's numbers came from."""

    train: TrainRecipePublic | None = Field(description="null: not trained by this service")
    final: FinalNumbersPublic | None = Field(description="null: not known")
    directions: DirectionsPublic
    engine: dict[str, Any] = Field(
        description="device, precision, points per call, workers, wall time, …"
    )
    checkpoint_sha256: str | None


class EstimateSplitBrief(BaseModel):
    """One split of an estimated surface: what its values rest on."""

    N: int = Field(description="samples in the split: n = N at a point is its full pass")
    n_mean: float = Field(description="mean samples read per sampled point")
    points_exact: int = Field(description="points read whole (n = N)")
    z: float = Field(description="the quantile the stated intervals use (simultaneous)")
    loss_halfwidth_max: float | None = Field(description="widest loss interval, z·SE")
    loss_halfwidth_rel_max: float | None = Field(description="the same relative to |loss|")


class EstimateBrief(BaseModel):
    """An estimated surface (null on an exact one: every value a full pass)."""

    target: float
    kind: Literal["relative", "absolute"]
    describe: str = Field(description="the target as a person reads it: ±5 %")
    seed: int
    method: str = Field(description="fitted or difference (docs/format.md)")
    level: float = Field(description="the stated intervals' coverage, e.g. 0.95")
    exact: bool = Field(description="every point has been read whole: the values are exact")
    points: int
    points_exact: int
    points_at_target: int = Field(description="points whose interval meets the target")
    method_text: str = Field(description="the method in one sentence")
    stopping_rule: str = Field(description="when a point stops sampling, as stored")
    splits: dict[str, EstimateSplitBrief]


class EstimateData(EstimateBrief):
    """The brief plus per-point arrays, shaped and downsampled as ``values``."""

    n: dict[str, Any] = Field(description="per split: samples read at each point")
    se: dict[str, Any] = Field(description="per metric (as in values): standard error")
    exact_points: Any = Field(description="per point: true where every split was read whole")
    at_target: Any = Field(description="per point: true where the loss interval meets the target")


class SurfaceSummary(BaseModel):
    """A surface without its arrays (``stats`` values may be null while partial).

    ``status`` is ``unreadable`` when its file is damaged: ``error`` says why, and posting its
    request again recomputes it."""

    id: str
    label: str
    status: Literal["partial", "complete", "unreadable"]
    error: str | None = Field(None, description="why an unreadable surface cannot be read")
    model: str
    dataset: str
    ndim: int
    grid: GridPublic
    metrics: list[str]
    loss: str = Field("cross_entropy", description="the loss its values measure (GET /api/losses)")
    done: int = Field(description="grid points computed (finite or not)")
    total: int
    nonfinite: int = Field(0, description="points computed to NaN or ±inf (a diverged model)")
    precision: str | None = Field(None, description="fp32, tf32 or bf16 arithmetic")
    created: str
    stats: dict[str, float | None]
    provenance: ProvenancePublic | None = Field(None, description="null while unreadable")
    hessian: HessianBrief | None = Field(
        None, description="key curvature numbers once an analysis is stored; else null"
    )
    gradient_flow: bool = Field(
        False, description="a gradient flow is stored (GET /api/surfaces/{id}/gradient-flow)"
    )
    sharpness: bool = Field(
        False, description="λmax along training is stored (GET /api/surfaces/{id}/sharpness)"
    )
    estimate: EstimateBrief | None = Field(
        None, description="an estimated surface's target, method and state; null: exact"
    )


class TrajectoryPublic(BaseModel):
    """The training path on a PCA surface, in the grid's units (final weights at 0, 0)."""

    x: list[float]
    y: list[float] | None = Field(description="null on a 1D curve")
    epochs: list[int]
    explained_variance: list[float] = Field(description="ratio of each direction, in [0, 1]")


class SurfaceData(SurfaceSummary):
    """A surface with arrays for plotting: ``values[m]`` has ny rows of nx (1D: a flat list;
    a volume: nz slices of ny rows of nx)."""

    x: list[float]
    y: list[float] | None
    z: list[float] | None = Field(None, description="z coordinates of a volume; else null")
    values: dict[
        str, list[list[list[float | None]]] | list[list[float | None]] | list[float | None]
    ]
    trajectory: TrajectoryPublic | None = Field(None, description="PCA surfaces only")
    hessian: HessianPublic | None = Field(None, description="the stored Hessian analysis, or null")
    estimate: EstimateData | None = Field(
        None, description="an estimated surface's per-point n, SE and flags; null: exact"
    )


class SurfaceCreated(BaseModel):
    """202: ``job`` queued or shared, ``surface`` null; 200: ``surface`` already computed."""

    job: JobPublic | None
    surface: SurfaceSummary | None
    mode: Literal["explore", "exact"] = Field(
        "exact", description="explore: an estimated surface; exact: every point a full pass"
    )
    mode_reason: str = Field("", description="why this mode: asked for, or the default rule")
    differences: list[str] = Field(
        default_factory=list,
        description="a recipe's differences from this server: versions (the numbers should "
        "not change), and with allow_differences every other one",
    )
