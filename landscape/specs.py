"""Frozen request types: what the library takes from its shells (CLI, API, notebooks).

They hold plain values only, so ``to_dict`` gives the JSON stored in files and job rows and
``from_dict`` rebuilds the same spec; equal specs give equal cache keys.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args

from landscape.errors import SpecError, UnknownNameError

Normalization = Literal["filter", "layer", "weight", "global", "none"]
Ignore = Literal["biasbn", "none"]
DirectionKind = Literal["random", "interpolate", "pca", "hessian", "three_point"]
# which eigenvectors ``hessian`` directions are: the top ones, the bottom ones, or one of each
HessianEnds = Literal["max", "min", "max,min"]
Split = Literal["train", "test"]
# The built-in losses of the outputs alone, which Hessian analyses take; surfaces and training
# take any loss ``landscape.losses`` resolves (its name is the spec's ``loss``).
LossName = Literal["cross_entropy", "mse", "mse_onehot", "cohen_square"]
OptimizerName = Literal["sgd", "adam", "gd"]  # gd: full-batch, one step per epoch
ScheduleName = Literal["cosine", "step", "constant"]
DeviceName = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "tf32", "bf16"]
ResolvedPrecision = Literal["fp32", "tf32", "bf16"]
BackendName = Literal["local", "ray"]
HessianDtype = Literal["float32", "float64"]
# torch.compile: True when the measured saving pays, False never, "always" forced (tests,
# benchmarks, the GPU check); see ``landscape.engine.plan.plan_compile``.
CompileMode = bool | Literal["always"]

MAX_CURVATURE_GRID = 15  # curvature map points per axis: 225 Lanczos runs is hours on a ResNet
# Fixed-step Lanczos (density, curvature map) keeps every basis vector: steps × n_params float64.
MAX_LANCZOS_STEPS = 200
# Hessian directions stop earlier once the top pair converges (often a few dozen steps).
DEFAULT_DIRECTION_STEPS = 100
MAX_DENSITY_PROBES = 100  # SLQ probes: each is a full Lanczos run
MAX_DATA_SPREAD = 16  # disjoint subsets a Hessian analysis repeats its spectrum on
# ``DirectionSpec.params`` entry that selects the parameters with ``requires_grad`` set
TRAINABLE = "trainable"
# Grid coordinates are multiples of filter-normalized directions: beyond |1000| a network's
# weights are noise times 1000 and the loss overflows; a bound keeps such requests out.
MAX_ABS_COORDINATE = 1000.0


def check_loss_name(name: object) -> None:
    """A loss name's form only: which names exist depends on the installed plugins, and a
    stored spec must read back without them (``landscape.losses.get_loss`` resolves it)."""
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise SpecError(f"loss must be a non-empty name of at most 200 characters, got {name!r}")


def check_choice(kind: str, value: object, literal: Any) -> None:
    """Raise UnknownNameError unless ``value`` is one of the Literal's members."""
    choices = get_args(literal)
    if value not in choices:
        raise UnknownNameError(kind, value, [str(c) for c in choices])


@dataclass(frozen=True)
class GridSpec:
    """Grid coordinates: ``n_x`` points over ``x_range``; ``n_y is None`` means a 1D curve,
    ``n_z`` (with ``z_range``) a 3D volume along a third direction."""

    x_range: tuple[float, float] = (-1.0, 1.0)
    n_x: int = 21
    y_range: tuple[float, float] | None = (-1.0, 1.0)
    n_y: int | None = 21
    z_range: tuple[float, float] | None = None
    n_z: int | None = None

    def __post_init__(self) -> None:
        _check_axis("x", self.x_range, self.n_x)
        if (self.n_y is None) != (self.y_range is None):
            raise SpecError("a 1D grid has neither n_y nor y_range; a 2D grid needs both")
        if self.n_y is not None and self.y_range is not None:
            _check_axis("y", self.y_range, self.n_y)
        if (self.n_z is None) != (self.z_range is None):
            raise SpecError("a 3D grid needs both n_z and z_range; a 1D or 2D grid neither")
        if self.n_z is not None and self.z_range is not None:
            if self.n_y is None:
                raise SpecError("a 3D grid needs n_y and y_range too")
            _check_axis("z", self.z_range, self.n_z)

    @property
    def ndim(self) -> int:
        return 1 if self.n_y is None else 2 if self.n_z is None else 3

    @property
    def n_points(self) -> int:
        return self.n_x * (self.n_y or 1) * (self.n_z or 1)


def _check_axis(name: str, value_range: tuple[float, float], n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise SpecError(f"n_{name} must be a positive integer, got {n!r}")
    low, high = value_range
    if not (math.isfinite(low) and math.isfinite(high)):
        raise SpecError(f"{name}_range must be finite, got {value_range!r}")
    if max(abs(low), abs(high)) > MAX_ABS_COORDINATE:
        raise SpecError(
            f"{name}_range must lie within ±{MAX_ABS_COORDINATE:g}, got {value_range!r}"
        )
    if n > 1 and not low < high:
        raise SpecError(f"{name}_range must have min < max, got {value_range!r}")


@dataclass(frozen=True)
class DirectionSpec:
    """How the plotting directions are made (Li et al. 2018 §4 for ``random`` + ``filter``).

    ``interpolate`` uses ``target_checkpoint - checkpoint`` as the x direction (Goodfellow et
    al. 2015); ``pca`` uses the top principal components of ``trajectory`` snapshots (Li et al.
    §7); ``hessian`` Hessian eigenvectors of the surface's loss: the top ones (the sharpest
    plane), the bottom ones or one of each (``hessian_ends``); ``three_point`` the plane through
    the checkpoint and the two ``through_checkpoints`` (Garipov et al. 2018), Gram–Schmidt
    unit axes in parameter units (``landscape.checkpoint_plane``).
    ``seed`` makes random directions reproducible on every device. ``max_lanczos_steps`` caps
    the Lanczos run of ``hessian`` directions (one Hessian product per step).
    ``params`` restricts every direction to a subset of the parameters (empty: all): each
    entry is an ``fnmatch`` glob over ``named_parameters()`` names (``layer3.*``) or
    ``trainable`` (those with ``requires_grad``); the others keep zero components, so a
    surface shows the loss of the subset with the rest of the network fixed.
    """

    kind: DirectionKind = "random"
    normalization: Normalization = "filter"
    ignore: Ignore = "biasbn"
    seed: int = 0
    target_checkpoint: str | None = None
    trajectory: tuple[str, ...] = ()
    through_checkpoints: tuple[str, ...] = ()
    max_lanczos_steps: int = DEFAULT_DIRECTION_STEPS
    hessian_ends: HessianEnds = "max"
    params: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_choice("direction kind", self.kind, DirectionKind)
        _check_param_patterns(self.params)
        check_choice("hessian ends", self.hessian_ends, HessianEnds)
        if self.kind != "hessian" and self.hessian_ends != "max":
            raise SpecError(
                f"hessian_ends applies to directions of kind 'hessian', not {self.kind!r}"
            )
        check_choice("normalization", self.normalization, Normalization)
        check_choice("ignore", self.ignore, Ignore)
        if self.kind == "interpolate" and not self.target_checkpoint:
            raise SpecError("directions of kind 'interpolate' need target_checkpoint")
        if self.kind == "pca" and len(self.trajectory) < 3:
            raise SpecError("directions of kind 'pca' need at least 3 trajectory snapshots")
        if (self.kind == "three_point") != bool(self.through_checkpoints):
            raise SpecError(
                "through_checkpoints (the two other checkpoints) go with, and only with, "
                f"directions of kind 'three_point'; got kind {self.kind!r} with "
                f"{len(self.through_checkpoints)}"
            )
        if self.kind == "three_point" and len(self.through_checkpoints) != 2:
            raise SpecError(
                "directions of kind 'three_point' need exactly 2 through_checkpoints, got "
                f"{len(self.through_checkpoints)}"
            )
        _check_steps("max_lanczos_steps", self.max_lanczos_steps)
        if self.kind != "hessian" and self.max_lanczos_steps != DEFAULT_DIRECTION_STEPS:
            raise SpecError(
                f"max_lanczos_steps applies to directions of kind 'hessian', not {self.kind!r}"
            )


def _check_param_patterns(patterns: tuple[str, ...]) -> None:
    """The form of ``DirectionSpec.params``; which names they match depends on the model
    (``landscape.directions.select_parameters`` checks that each matches one)."""
    if not isinstance(patterns, tuple):
        raise SpecError(f"params must be a tuple of name patterns, got {patterns!r}")
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern.strip() or len(pattern) > 200:
            raise SpecError(
                f"params: each entry must be a non-empty name pattern of at most 200 "
                f"characters (e.g. 'layer3.*' or {TRAINABLE!r}), got {pattern!r}"
            )
        if "," in pattern or pattern != pattern.strip():
            raise SpecError(
                f"params: {pattern!r} must be one pattern, without commas or surrounding "
                "spaces (give several as separate entries)"
            )
    if len(set(patterns)) != len(patterns):
        raise SpecError(f"params lists a pattern twice: {list(patterns)!r}")


@dataclass(frozen=True)
class DataSpec:
    """Which data a model is trained or evaluated on.

    ``name`` is a registered data set (``digits``, ``cifar10``, …) or a path to a ``.pt`` /
    ``.npz`` file holding ``x`` and ``y``. ``train_size`` keeps a deterministic subset.
    """

    name: str = "digits"
    data_root: str | None = None
    train_size: int | None = None
    test_size: int | None = None
    download: bool = False


@dataclass(frozen=True)
class EngineOptions:
    """How grid points are evaluated. None of these change the numbers beyond fp32 rounding
    except ``precision``: ``auto`` is ``tf32`` on CUDA and ``fp32`` on CPU (see
    ``landscape.engine.plan.resolve_precision``); ``tf32``/``bf16`` exist only on CUDA."""

    device: DeviceName = "auto"
    precision: Precision = "auto"
    points_per_call: int | None = None  # None: the engine picks per device (CUDA: measured)
    batch_size: int | None = None  # samples per forward pass; None: engine picks
    workers: int | None = None  # CPU processes; None: one per core
    devices: tuple[int, ...] | None = None  # CUDA device indices; None: every visible GPU
    compile: CompileMode = True  # torch.compile the per-point forward: when it pays/never/always
    backend: BackendName = "local"  # "ray": chunks run as Ray tasks across a cluster
    ray_address: str | None = None  # None: join RAY_ADDRESS or start a local Ray instance

    def __post_init__(self) -> None:
        check_choice("device", self.device, DeviceName)
        check_choice("backend", self.backend, BackendName)
        check_choice("precision", self.precision, Precision)
        if not (isinstance(self.compile, bool) or self.compile == "always"):
            raise SpecError(
                "compile must be True (compile when the measured saving pays), False (never) "
                f"or 'always' (forced), got {self.compile!r}"
            )
        if self.devices is not None:
            if not self.devices or any(
                not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in self.devices
            ):
                raise SpecError(
                    f"devices must be non-negative GPU indices, got {list(self.devices)!r}"
                )
            if len(set(self.devices)) != len(self.devices):
                raise SpecError(f"devices lists a GPU twice: {list(self.devices)!r}")


@dataclass(frozen=True)
class SurfaceSpec:
    """Everything that determines a surface's numbers (and so its cache key)."""

    checkpoint: str
    data: DataSpec = field(default_factory=DataSpec)
    grid: GridSpec = field(default_factory=GridSpec)
    directions: DirectionSpec = field(default_factory=DirectionSpec)
    splits: tuple[Split, ...] = ("train",)
    loss: str = "cross_entropy"  # a ``landscape.losses`` name: resolved when computed

    def __post_init__(self) -> None:
        if not self.splits:
            raise SpecError("splits must name at least one of: train, test")
        for split in self.splits:
            check_choice("split", split, Split)
        check_loss_name(self.loss)

    @property
    def metric_names(self) -> tuple[str, ...]:
        """HDF5 dataset names, e.g. ``("train_loss", "train_acc")``."""
        return tuple(f"{s}_{m}" for s in self.splits for m in ("loss", "acc"))


@dataclass(frozen=True)
class TrainSpec:
    """A training recipe; the defaults follow He et al. 2016 §4.2 scaled to small data."""

    model: str
    data: DataSpec = field(default_factory=DataSpec)
    model_args: dict[str, int | float | str] = field(default_factory=dict)  # e.g. depth, width
    epochs: int = 10
    batch_size: int = 128
    loss: str = "cross_entropy"  # a ``landscape.losses`` name, as a surface's
    optimizer: OptimizerName = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: ScheduleName = "cosine"
    warmup_epochs: int = 0  # epochs at lr/10 before the schedule (He et al. 2016 §4.2)
    seed: int = 0
    device: DeviceName = "auto"
    snapshot_every: int = 0  # save a per-epoch snapshot every N epochs (0: none)
    # λmax of the full-batch training loss every N epochs (gd: steps), warm-started Lanczos
    # (landscape.analysis.sharpness; Cohen et al. 2021); 0: never
    sharpness_every: int = 0

    def __post_init__(self) -> None:
        check_choice("optimizer", self.optimizer, OptimizerName)
        if self.sharpness_every < 0:
            raise SpecError(f"sharpness_every must be >= 0, got {self.sharpness_every}")
        check_choice("schedule", self.schedule, ScheduleName)
        check_choice("device", self.device, DeviceName)
        check_loss_name(self.loss)
        if self.epochs < 1:
            raise SpecError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise SpecError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise SpecError(
                f"warmup_epochs must be >= 0 and < epochs ({self.epochs}), got {self.warmup_epochs}"
            )
        if not self.lr > 0:
            raise SpecError(f"lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class AnalysisSpec:
    """One Hessian analysis of a checkpoint (``landscape.analysis.analyze``): extreme
    eigenvalues (Lanczos), the trace (Hutchinson, ``trace_samples`` probes; 0 for none), the
    eigenvalue density (SLQ, ``density_probes`` runs of ``density_steps``; 0 probes for none)
    and, over a surface's plane, the ``|λ_min/λ_max|`` map on ``curvature_grid``² points
    (ARPACK per point, or ``curvature_steps`` fixed Lanczos steps with residual norms); the
    eigenvalues by ARPACK, or with ``spectrum_steps`` one fixed-step Lanczos run.
    ``data_spread`` (0: none, else >= 2): the extreme eigenvalues and the trace again on that
    many disjoint subsets of the analysed subset's size (``landscape.analysis.data_spread``).
    ``params``: the Hessian's block of a parameter subset (patterns as ``DirectionSpec``'s;
    empty: every parameter)."""

    checkpoint: str
    data: DataSpec = field(default_factory=DataSpec)
    split: Split = "train"
    loss: str = "cross_entropy"  # a LossName: a surface's loss may be any, this checks it
    top: int = 3
    bottom: int = 1
    trace_samples: int = 0
    curvature_grid: int = 0
    curvature_steps: int | None = None
    spectrum_steps: int | None = None
    density_probes: int = 0
    density_steps: int = 40
    tol: float = 1e-5
    maxiter: int | None = None
    seed: int = 0
    batch_size: int = 256  # samples per pass: products are exact sums, this only sets memory
    device: DeviceName = "auto"
    dtype: HessianDtype = "float32"
    data_spread: int = 0
    params: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_choice("split", self.split, Split)
        _check_param_patterns(self.params)
        check_choice("loss", self.loss, LossName)
        check_choice("device", self.device, DeviceName)
        check_choice("dtype", self.dtype, HessianDtype)
        for name in ("top", "bottom", "trace_samples", "curvature_grid", "density_probes"):
            if getattr(self, name) < 0:
                raise SpecError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size < 1:
            raise SpecError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.curvature_grid > MAX_CURVATURE_GRID:
            raise SpecError(
                f"curvature_grid must be at most {MAX_CURVATURE_GRID} (one Lanczos run per "
                f"point), got {self.curvature_grid}"
            )
        if self.density_probes > MAX_DENSITY_PROBES:
            raise SpecError(
                f"density_probes must be at most {MAX_DENSITY_PROBES}, got {self.density_probes}"
            )
        _check_steps("density_steps", self.density_steps)
        if self.spectrum_steps is not None:
            _check_steps("spectrum_steps", self.spectrum_steps)
        if self.curvature_steps is not None:
            _check_steps("curvature_steps", self.curvature_steps)
            if not self.curvature_grid:
                raise SpecError("curvature_steps sets the curvature map's Lanczos: ask for a map")
        if self.data_spread and not (self.spectrum and 2 <= self.data_spread <= MAX_DATA_SPREAD):
            raise SpecError(
                f"data_spread must be 0 or 2..{MAX_DATA_SPREAD} subsets, with top, bottom or "
                f"trace to spread, got {self.data_spread}"
            )
        if not (self.spectrum or self.curvature_grid or self.density_probes):
            raise SpecError(
                "nothing to compute: ask for top, bottom, trace, density_probes or curvature_grid"
            )

    @property
    def spectrum(self) -> bool:
        return bool(self.top or self.bottom or self.trace_samples)


def _check_steps(name: str, steps: int) -> None:
    if not 2 <= steps <= MAX_LANCZOS_STEPS:
        raise SpecError(
            f"{name} must be 2..{MAX_LANCZOS_STEPS} Lanczos steps (each keeps a basis vector "
            f"of every parameter), got {steps}"
        )


SpecT = TypeVar("SpecT")


def to_dict(spec: Any) -> dict[str, Any]:
    """A JSON-ready dict of a spec (tuples become lists)."""
    return dataclasses.asdict(spec)


def from_dict(cls: type[SpecT], data: dict[str, Any]) -> SpecT:
    """Rebuild a (nested) spec from ``to_dict`` output; unknown keys are an error."""
    assert dataclasses.is_dataclass(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise SpecError(f"unknown {cls.__name__} field(s): {', '.join(sorted(unknown))}")
    nested = {"data": DataSpec, "grid": GridSpec, "directions": DirectionSpec}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in nested and isinstance(value, dict):
            value = from_dict(nested[key], value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)
