"""The straight line between two trained nets of one architecture, and its barrier.

Loss and accuracy at ``θ(t) = (1−t)·θ₁ + t·θ₂`` on a grid of ``t`` (Goodfellow et al. 2015;
Frankle et al. 2020 §2 for the barrier): are two solutions in one basin? Every floating entry
of the state dict is interpolated, BN running statistics included (``bn="eval"``); with
``bn="recompute"`` they are re-estimated at each ``t`` on a fixed, seeded training subset
(Garipov et al. 2018, ``landscape.analysis.bn_stats``), the evaluation the literature trusts
for BN nets. ``align="weights"`` first permutes θ₂'s hidden units onto θ₁'s (Ainsworth et al.
2022, ``landscape.analysis.weight_matching``), and the unaligned line is computed too, so the
barrier before and after alignment come from one run.

The file is a 1D surface file of direction kind ``interpolate`` (``x`` holds ``t``,
``directions/x`` is ``θ₂ − θ₁`` of the parameters, θ₂ aligned where asked) with an
``interpolation/`` group: the settings, both digests and the barriers (docs/format.md).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from landscape import storage as store
from landscape.analysis.bn_stats import batchnorm_layers, bn_subset_indices, recompute_bn
from landscape.analysis.surface_metrics import surface_metrics
from landscape.errors import CancelledError, CheckpointError, SpecError, SurfaceFileError
from landscape.specs import (
    DataSpec,
    DirectionSpec,
    EngineOptions,
    GridSpec,
    Split,
    SurfaceSpec,
    check_choice,
    check_loss_name,
)
from landscape.storage import interpolation as store_interpolation

BnMode = Literal["eval", "recompute"]
AlignMode = Literal["none", "weights"]
State = dict[str, Tensor]
Values = dict[str, np.ndarray]
OnProgress = Callable[[int, int], None]

_ON_GRID = 1e-9  # how near a grid coordinate must be to 0 or 1 to stand for that end


@dataclass(frozen=True)
class InterpolationSpec:
    """Everything that determines a linear path's numbers (and so its file's key)."""

    checkpoint: str  # θ₁, at t = 0
    target: str  # θ₂, at t = 1
    data: DataSpec = field(default_factory=DataSpec)
    t_range: tuple[float, float] = (0.0, 1.0)
    n_t: int = 21
    splits: tuple[Split, ...] = ("train", "test")
    loss: str = "cross_entropy"
    bn: BnMode = "eval"
    bn_subset: int = 1000  # training samples the BN statistics are re-estimated on
    bn_seed: int = 0  # which samples
    align: AlignMode = "none"
    align_seed: int = 0  # the order weight matching visits the layers in

    def __post_init__(self) -> None:
        check_choice("bn", self.bn, BnMode)
        check_choice("align", self.align, AlignMode)
        check_loss_name(self.loss)
        if self.bn_subset < 1:
            raise SpecError(f"bn_subset must be a positive number of samples, got {self.bn_subset}")
        t = self.t_grid  # GridSpec checks the range and the count
        for end in (0.0, 1.0):
            if not np.any(np.abs(t - end) < _ON_GRID):
                raise SpecError(
                    f"the t grid linspace({self.t_range[0]:g}, {self.t_range[1]:g}, {self.n_t}) "
                    f"misses t = {end:g}; the barrier needs both checkpoints on it "
                    "(e.g. range 0 1, or -0.5 1.5 with 21 points)"
                )

    @property
    def surface_spec(self) -> SurfaceSpec:
        """The spec of the 1D surface file that stores the path."""
        return SurfaceSpec(
            checkpoint=self.checkpoint,
            data=self.data,
            grid=GridSpec(x_range=self.t_range, n_x=self.n_t, y_range=None, n_y=None),
            directions=DirectionSpec(kind="interpolate", target_checkpoint=self.target),
            splits=self.splits,
            loss=self.loss,
        )

    @property
    def t_grid(self) -> np.ndarray:
        x, _ = store.grid_coordinates(self.surface_spec.grid)
        return np.asarray(x, dtype=np.float64)


# --------------------------------------------------------------------------- the path


def interpolate_state(a: Mapping[str, Tensor], b: Mapping[str, Tensor], t: float) -> State:
    """``(1−t)·a + t·b`` of every floating entry; integer buffers (BN's batch counter) from a."""
    return {
        k: torch.lerp(v, b[k].to(v.device, v.dtype), t) if v.is_floating_point() else v.clone()
        for k, v in a.items()
    }


def barriers(t: np.ndarray, values: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Per metric, the barrier on ``0 ≤ t ≤ 1`` (Frankle et al. 2020 §2): for a loss, its
    maximum minus the mean of the two ends' losses; for an accuracy, the mean of the ends'
    minus its minimum. Both are ≥ 0, and 0 only for a path no worse than its ends' mean."""
    t = np.asarray(t, dtype=np.float64)
    start, end = int(np.argmin(np.abs(t))), int(np.argmin(np.abs(t - 1.0)))
    inside = (t >= -_ON_GRID) & (t <= 1.0 + _ON_GRID)
    out: dict[str, float] = {}
    for metric, v in values.items():
        ends = 0.5 * (float(v[start]) + float(v[end]))
        if metric.endswith("_loss"):
            out[metric] = float(np.max(v[inside])) - ends
        else:
            out[metric] = ends - float(np.min(v[inside]))
    return out


def evaluate_path(
    model: nn.Module,
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    t: np.ndarray,
    data: Mapping[str, tuple[Tensor, Tensor]],
    *,
    loss: str = "cross_entropy",
    bn: BnMode = "eval",
    bn_inputs: Tensor | None = None,
    options: EngineOptions | None = None,
    on_point: Callable[[], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[Values, dict[str, Any]]:
    """``{split}_loss`` and ``{split}_acc`` at each ``t`` of the line from ``state_a`` to
    ``state_b``, loaded into (a copy of) ``model``; the engine computes every value.

    A net with no floating buffers is one surface along ``θ₂ − θ₁`` (one evaluator, every
    point at once); a BN net's buffers change with ``t`` (interpolated, or re-estimated on
    ``bn_inputs``), and the engine folds them into the weights, so each ``t`` gets its own.
    Returned with the (last) evaluator's ``describe()``.
    """
    from landscape.engine.devices import resolve_device

    check_choice("bn", bn, BnMode)
    options = options or EngineOptions()
    t = np.asarray(t, dtype=np.float64)
    net = copy.deepcopy(model).eval()
    params = [n for n, _ in net.named_parameters()]
    direction = {n: (state_b[n] - state_a[n]).detach().float() for n in params}
    values: Values
    info: dict[str, Any] = {}
    if not any(b.is_floating_point() for b in net.buffers()):
        net.load_state_dict(dict(state_a))
        with _evaluator(net, direction, data, loss, options, len(t)) as evaluator:
            _stop_check(should_stop)
            values = evaluator.evaluate(t[:, None])
            info = dict(evaluator.describe())
        for _ in t:
            if on_point is not None:
                on_point()
        return values, info
    if bn == "recompute" and bn_inputs is None:
        raise SpecError("bn='recompute' needs the training inputs to re-estimate on")
    rows: list[Values] = []
    # one point per evaluator: one process on one device (no pool started per point)
    first = (options.devices or (0,))[:1]
    per_point = dataclasses.replace(options, workers=1, points_per_call=1, devices=first)
    device = resolve_device(options.device)
    zero = {n: torch.zeros_like(d) for n, d in direction.items()}
    for value in t:
        _stop_check(should_stop)
        net.load_state_dict(interpolate_state(state_a, state_b, float(value)))
        if bn == "recompute":
            assert bn_inputs is not None
            recompute_bn(net.to(device), bn_inputs)  # where the engine computes
            net.cpu()
        with _evaluator(net, zero, data, loss, per_point, 1) as evaluator:
            rows.append(evaluator.evaluate(np.zeros((1, 1))))
            info = dict(evaluator.describe())
        # the same net and data at every t: the batch size planned once holds for all
        per_point = dataclasses.replace(per_point, batch_size=int(info["batch_size"]))
        if on_point is not None:
            on_point()
    info["evaluators"] = len(t)  # one per point: their BN statistics differ
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}, info


def _evaluator(
    model: nn.Module,
    direction: Mapping[str, Tensor],
    data: Mapping[str, tuple[Tensor, Tensor]],
    loss: str,
    options: EngineOptions,
    n_points: int,
) -> Any:
    from landscape.engine.backend import make_evaluator

    return make_evaluator(model, [direction], data, loss=loss, options=options, n_points=n_points)


def _stop_check(should_stop: Callable[[], bool] | None) -> None:
    if should_stop is not None and should_stop():
        raise CancelledError("interpolation cancelled; nothing was written")


# --------------------------------------------------------------------------- the job


def key_settings(spec: InterpolationSpec) -> dict[str, Any]:
    """What changes a path's numbers beyond its surface spec: part of its file's key."""
    settings: dict[str, Any] = {"bn": spec.bn, "align": spec.align}
    if spec.bn == "recompute":
        settings.update(bn_subset=spec.bn_subset, bn_seed=spec.bn_seed)
    if spec.align != "none":
        settings["align_seed"] = spec.align_seed
    return settings


def compute_interpolation(
    spec: InterpolationSpec,
    out: str | Path,
    *,
    options: EngineOptions | None = None,
    on_progress: OnProgress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Path:
    """Compute the path of ``spec`` into ``out`` and return ``out``. A complete file of the
    same request is returned as it is (an unfinished one computed again), a file of another
    request refused. Nothing is written before every point is computed."""
    from landscape.engine.devices import resolve_device
    from landscape.engine.plan import resolve_precision
    from landscape.losses import get_loss
    from landscape.sources.checkpoint import file_digest, load_checkpoint
    from landscape.sources.model_source import checkpoint_source

    get_loss(spec.loss)
    options = options or EngineOptions()
    precision = resolve_precision(options, resolve_device(options.device))
    options = dataclasses.replace(options, precision=precision)
    out, start = Path(out), time.perf_counter()
    for path in (spec.checkpoint, spec.target):
        if not Path(path).is_file():
            load_checkpoint(path)  # the usual CheckpointError naming the file
    sha_b = file_digest(spec.target)
    key = store_interpolation.interpolation_key(
        spec.surface_spec, file_digest(spec.checkpoint), sha_b, precision, key_settings(spec)
    )
    if out.exists():
        stored, status = store_interpolation.stored_state(out)
        if stored != key:
            raise SurfaceFileError(
                f"{out.name!r} holds another surface or interpolation; choose another --out "
                "or delete the file"
            )
        if status == "complete":
            return out
        out.unlink()  # an unfinished write of this same request
    source = checkpoint_source(spec.surface_spec)
    if source.task != "classification":
        raise SpecError("interpolation evaluates classifiers (integer class labels)")
    model_b, meta_b = load_checkpoint(spec.target)
    _check_same_architecture(spec, source.provenance, meta_b, source.model, model_b)
    state_a = {k: v.detach().clone() for k, v in source.model.state_dict().items()}
    state_b = {k: v.detach().clone() for k, v in model_b.state_dict().items()}
    targets, alignment = {"": state_b}, None
    if spec.align == "weights":
        from landscape.analysis.permutation_specs import align_state

        aligned, alignment = align_state(source.model, state_a, state_b, seed=spec.align_seed)
        targets = {"": aligned, store_interpolation.UNALIGNED: state_b}
    n_bn = len(batchnorm_layers(source.model))
    bn_inputs = _bn_inputs(spec, source.data) if spec.bn == "recompute" and n_bn else None
    t = spec.t_grid
    total, done = len(t) * len(targets), 0

    def on_point() -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(done, total)

    results = {
        prefix: evaluate_path(
            source.model,
            state_a,
            target,
            t,
            source.data,
            loss=spec.loss,
            bn=spec.bn,
            bn_inputs=bn_inputs,
            options=options,
            on_point=on_point,
            should_stop=should_stop,
        )
        for prefix, target in targets.items()
    }
    engine = results[""][1]
    values = {prefix: result[0] for prefix, result in results.items()}
    found = {prefix: barriers(t, v) for prefix, v in values.items()}
    metrics = surface_metrics(t, None, values[""], spec.surface_spec.metric_names)
    metrics.update({f"{m}_barrier": v for m, v in found[""].items()})
    params = [n for n, _ in source.model.named_parameters()]
    settings = {
        **key_settings(spec),
        "checkpoint": Path(spec.checkpoint).name,
        "target_checkpoint": Path(spec.target).name,
        "checkpoint_sha256": source.key,
        "target_checkpoint_sha256": sha_b,
        "bn_layers": n_bn,
        "bn_subset_used": 0 if bn_inputs is None else len(bn_inputs),
        "alignment": alignment,
        "precision": precision,
    }
    final = {
        "wall_time_s": time.perf_counter() - start,
        "engine": engine,
        "device": engine.get("device"),
        "dtype": engine.get("dtype"),
    }
    return store_interpolation.write_interpolation(
        out,
        spec.surface_spec,
        t=t,
        values=values[""],
        unaligned=values.get(store_interpolation.UNALIGNED),
        direction={n: targets[""][n] - state_a[n] for n in params},
        barriers=found,
        provenance={**source.provenance, "key": key, "target_checkpoint_sha256": sha_b},
        settings=settings,
        metrics=metrics,
        final=final,
    )


def _bn_inputs(spec: InterpolationSpec, data: Mapping[str, tuple[Tensor, Tensor]]) -> Tensor:
    """The fixed training subset BN statistics are re-estimated on."""
    if "train" in data:
        x = data["train"][0]
    else:
        from landscape.data import load_data

        x = load_data(spec.data, "train")[0]
    return x[bn_subset_indices(len(x), spec.bn_subset, spec.bn_seed)]


def _check_same_architecture(
    spec: InterpolationSpec,
    provenance: Mapping[str, Any],
    meta_b: Mapping[str, Any],
    model_a: nn.Module,
    model_b: nn.Module,
) -> None:
    """Both checkpoints are one zoo model with one set of arguments: a line between two
    architectures is not defined."""
    a_name, b_name = provenance.get("model"), meta_b.get("model")
    a_args, b_args = dict(provenance.get("model_args") or {}), dict(meta_b.get("model_args") or {})
    shapes_a = {k: tuple(v.shape) for k, v in model_a.state_dict().items()}
    shapes_b = {k: tuple(v.shape) for k, v in model_b.state_dict().items()}
    if a_name != b_name or a_args != b_args or shapes_a != shapes_b:
        raise CheckpointError(
            f"{Path(spec.checkpoint).name} ({a_name} {a_args}) and {Path(spec.target).name} "
            f"({b_name} {b_args}) are not the same architecture; interpolation needs two "
            "checkpoints of one model with the same arguments"
        )
