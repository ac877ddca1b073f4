"""From a validated request to library specs: which checkpoint, which surface file, which id.

The route plans a request once (to answer at once with a surface id, a cached surface or a
clear 422) and stores the plan with the job (``Plan.to_json``); the worker executes that stored
plan, so the two can never disagree on a path, a key or a precision. Where and how the points
are evaluated (device, processes, compile, backend) is the worker's own setting, read when it
runs the job (``api/runners/base.py``). Analyses of finished surfaces are planned in
``api/planning/hessian.py``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.orm import Session

from api.db import CheckpointRecord
from api.planning.budget import check_budget, surface_advice
from api.planning.common import (
    check_dataset,
    checkpoint_path,
    declared_precision,
    surface_path,
)
from api.planning.cost import (
    Estimate,
    NetCost,
    Shape,
    checkpoint_cost,
    data_shape,
    split_size,
    surface_estimate,
)
from api.planning.rate import measured_throughput
from api.planning.serialize import StoredPlan, stored_before
from api.schedule import QueuePolicy
from api.schemas.surface import EXPLORE_DEFAULT_TARGET, SurfaceRequest
from api.settings import Settings
from landscape.directions import select_parameters
from landscape.errors import SpecError, UnknownNameError
from landscape.explore.spec import EstimateSpec
from landscape.models import SHAPE_KEYS, build, list_models
from landscape.specs import (
    DEFAULT_DIRECTION_STEPS,
    DataSpec,
    DirectionSpec,
    GridSpec,
    SurfaceSpec,
    TrainSpec,
    to_dict,
)
from landscape.storage import estimate_key, read_surface, surface_key
from landscape.train import snapshot_dir

DEFAULT_DATASET = "digits"
# A new surface on data with more training samples than this explores by default: there a
# full pass per point is what makes a surface slow, and an estimate's cost does not grow with N.
EXPLORE_ABOVE = 10_000


@dataclass(frozen=True)
class Plan(StoredPlan):
    """Everything a worker needs to produce one surface."""

    surface_id: str
    surface_spec: SurfaceSpec
    train_spec: TrainSpec | None  # None: an uploaded checkpoint; else trained unless cached
    # declared for the workers' device, never "auto"; part of the id (rows stored before
    # plans left the device out held it in their engine options)
    precision: str = field(metadata=stored_before("engine", "precision"))
    checkpoint_id: str
    checkpoint_path: Path
    surface_path: Path
    model: str
    dataset: str
    label: str
    estimate: EstimateSpec | None = None  # an estimated surface (its id is the estimate's key)
    make_exact: bool = False  # carry the estimated file to n = N at every point
    mode_reason: str = ""

    def cost(self, net: NetCost, shape: Shape, train: TrainSpec | None) -> Estimate:
        """What running this plan costs: an exact surface, an estimate at its expected cost,
        or (``make_exact``) the samples the file's points have not read yet."""
        remaining = remaining_samples(self.surface_path) if self.make_exact else None
        return surface_estimate(
            self.surface_spec, train, net, shape, explore=self.estimate, remaining=remaining
        )


def remaining_samples(path: Path) -> int:
    """Samples an estimated surface file still has to read for every point to be exact."""
    state = read_surface(path).estimate
    if state is None:
        return 0
    return int(sum((part.size - part.n()).sum() for part in state.splits.values()))


def choose_estimate(request: SurfaceRequest, data: DataSpec) -> tuple[EstimateSpec | None, str]:
    """The request's ``estimate`` if it gives one (null: exact); absent, explore at ±5 % on
    more than ``EXPLORE_ABOVE`` training samples, else exact. With the reason, in words."""
    if "estimate" in request.model_fields_set:
        if request.estimate is None:
            return None, "exact, as asked"
        spec = request.estimate.spec()
        return spec, f"explore {spec.describe()}, as asked"
    return default_estimate(data)


def default_estimate(data: DataSpec) -> tuple[EstimateSpec | None, str]:
    """A new surface's mode when its request does not say: explore at ±5 % on more than
    ``EXPLORE_ABOVE`` training samples (the subset's, when it has one), else exact."""
    n = split_size(data, "train")
    if n > EXPLORE_ABOVE:
        spec = EstimateSpec(EXPLORE_DEFAULT_TARGET)
        return spec, (
            f"explore {spec.describe()} by default: {n:,} training samples is more than "
            f"{EXPLORE_ABOVE:,} (ask estimate null for exact)"
        )
    reason = f"exact by default: {n:,} training samples (explore is the default above "
    return None, f"{reason}{EXPLORE_ABOVE:,})"


def trajectory_paths(
    settings: Settings, checkpoint_id: str, train_spec: TrainSpec | None
) -> tuple[str, ...]:
    """The snapshots ``train_model`` will write for a recipe with ``snapshot_every`` (epoch 0,
    then every ``snapshot_every`` epochs and the last): known before training, so the surface
    id is too. Empty when the recipe takes no snapshots."""
    if train_spec is None or train_spec.snapshot_every < 1:
        return ()
    every, epochs = train_spec.snapshot_every, train_spec.epochs
    kept = sorted({0, epochs, *range(every, epochs + 1, every)})
    folder = snapshot_dir(checkpoint_path(settings, checkpoint_id))
    return tuple(str(folder / f"epoch_{epoch:03d}.pt") for epoch in kept)


# recipe fields added after checkpoints were first stored, with the value they had before
_RECIPE_FIELDS_ADDED_LATER: dict[str, object] = {"loss": "cross_entropy", "sharpness_every": 0}


def train_digest(spec: TrainSpec) -> str:
    """The trained checkpoint's id: a digest of the recipe, minus where/how it runs.

    Device, data folder and download permission do not change what is learned (up to
    nondeterministic kernels), so the same recipe is trained once per deployment.
    """
    recipe = to_dict(spec)
    recipe.pop("device", None)
    recipe["data"].pop("data_root", None)
    recipe["data"].pop("download", None)
    for name, default in _RECIPE_FIELDS_ADDED_LATER.items():
        if recipe.get(name) == default:  # ids of recipes older than the field stay the same
            recipe.pop(name)
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _check_limits(request: SurfaceRequest, settings: Settings) -> None:
    grid = request.grid
    points = grid.points
    if points > settings.max_grid_points:
        shape = "×".join(str(n) for n in (grid.nx, grid.ny, grid.nz) if n is not None)
        raise SpecError(
            f"grid of {shape} = {points} points is larger than this server's limit of "
            f"{settings.max_grid_points} points; use fewer points"
        )
    if request.train is not None and request.train.epochs > settings.max_epochs:
        raise SpecError(
            f"train.epochs = {request.train.epochs} is more than this server's limit of "
            f"{settings.max_epochs}"
        )
    cap = settings.max_train_size
    if cap is not None and (request.train_size or cap + 1) > cap:
        raise SpecError(f"train_size must be at most {cap} on this server")


def check_param_patterns(
    model: str, model_args: dict[str, Any], data: DataSpec, patterns: tuple[str, ...]
) -> None:
    """A parameter subset whose patterns match no parameter is a 422 now, not a failed job:
    the net is built on the meta device (names and shapes, no memory) to match them against.
    A model this server cannot build (an ONNX graph, a plugin it lacks) is matched when the
    job loads it."""
    if not patterns or model not in {info.name for info in list_models()}:
        return
    channels, size, classes, *signal = data_shape(data)
    args = {k: v for k, v in model_args.items() if k not in SHAPE_KEYS}
    try:
        with torch.device("meta"):
            net = build(
                model, in_channels=channels, num_classes=classes, image_size=size,
                spatial_dims=signal[0] if signal else 2, **args,
            )  # fmt: skip
    except Exception:  # the cost check that follows names a builder's refusal
        return
    select_parameters(net, patterns)  # SpecError (422) naming the pattern and some names


def plan_surface(request: SurfaceRequest, settings: Settings, session: Session) -> Plan:
    """Resolve names and ids; raise a LandscapeError (→ 422) for anything unknown or too big,
    the job's estimated cost over one of this server's budgets included."""
    _check_limits(request, settings)
    train_spec: TrainSpec | None = None
    if request.checkpoint is not None:
        record = session.get(CheckpointRecord, request.checkpoint)
        if record is None or not checkpoint_path(settings, record.id, record.format).exists():
            raise SpecError(
                f"unknown checkpoint {request.checkpoint!r}; list them with GET /api/checkpoints"
            )
        model, checkpoint_id, checkpoint_format = record.model, record.id, record.format
        dataset = request.dataset or record.dataset
        data = check_dataset(dataset, settings)
        recorded = (record.details or {}).get("model_args")  # as the checkpoint file has them
        model_args: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
    else:
        assert request.model is not None  # the schema asks for one of model/checkpoint
        model = request.model
        known = [info.name for info in list_models()]
        if model not in known:
            raise UnknownNameError("model", model, known)
        dataset = request.dataset or DEFAULT_DATASET
        data = check_dataset(dataset, settings)
        recipe = request.train.model_dump() if request.train else {}
        train_data = DataSpec(
            name=data.name,
            data_root=data.data_root,
            train_size=request.train_size,
            download=data.download,
        )
        # PCA directions need the per-epoch snapshots; they are part of this recipe's cache
        # (snapshot_every enters the digest, so a random-direction recipe is not disturbed).
        snapshot_every = 1 if request.directions.kind == "pca" else 0
        # The net learns the loss its surface shows unless the recipe names another.
        recipe["loss"] = recipe.get("loss") or request.loss
        train_spec = TrainSpec(
            model=model,
            data=train_data,
            snapshot_every=snapshot_every,
            **recipe,
        )
        checkpoint_id, checkpoint_format = train_digest(train_spec), None
        model_args = dict(train_spec.model_args)

    grid = request.grid
    spec = SurfaceSpec(
        checkpoint=str(checkpoint_path(settings, checkpoint_id, checkpoint_format)),
        data=DataSpec(
            name=data.name,
            data_root=data.data_root,
            train_size=request.train_size,
            test_size=request.test_size,
            download=data.download,
        ),
        grid=GridSpec(
            x_range=grid.xrange,
            n_x=grid.nx,
            y_range=grid.yrange,
            n_y=grid.ny,
            z_range=grid.zrange,
            n_z=grid.nz,
        ),
        directions=DirectionSpec(
            kind=request.directions.kind,
            normalization=request.directions.normalization,
            ignore=request.directions.ignore,
            seed=request.directions.seed,
            trajectory=trajectory_paths(settings, checkpoint_id, train_spec),
            max_lanczos_steps=request.directions.max_lanczos_steps or DEFAULT_DIRECTION_STEPS,
            params=tuple(dict.fromkeys(request.directions.params)),
        ),
        splits=tuple(request.splits),
        loss=request.loss,
    )
    check_param_patterns(model, model_args, data, spec.directions.params)
    precision = declared_precision(settings, settings.engine_precision)
    estimate, mode_reason = choose_estimate(request, spec.data)
    surface_id = surface_key(spec, checkpoint_id, precision)
    if estimate is not None:  # never the exact surface's id (storage.estimate_key)
        surface_id = estimate_key(surface_id, estimate)
    # A surface whose file exists was admitted before: its cached answer (or the rest of a
    # partial one) is not refused when budgets change; a cached checkpoint is not retrained.
    if not surface_path(settings, surface_id).exists():
        checkpoint = checkpoint_path(settings, checkpoint_id, checkpoint_format)
        shape = data_shape(data)
        net = checkpoint_cost(model, model_args, checkpoint, shape)
        pending = None if checkpoint.exists() else train_spec
        check_budget(
            surface_estimate(spec, pending, net, shape, explore=estimate),
            settings,
            measured_throughput(session, QueuePolicy.from_settings(settings)),
            surface_advice(spec, pending, net, shape),
        )
    label = request.label or f"{model} on {dataset}"
    return Plan(
        surface_id=surface_id,
        surface_spec=spec,
        train_spec=train_spec,
        precision=precision,
        checkpoint_id=checkpoint_id,
        checkpoint_path=checkpoint_path(settings, checkpoint_id, checkpoint_format),
        surface_path=surface_path(settings, surface_id),
        model=model,
        dataset=dataset,
        label=label,
        estimate=estimate,
        mode_reason=mode_reason,
    )
