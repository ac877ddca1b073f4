"""Plotting directions in parameter space, keyed by ``named_parameters()`` names.

A surface is ``f(θ + x·δ + y·η)``; this module makes ``δ`` (and ``η``). Random directions are
rescaled so that their size matches the weights they perturb (Li et al. 2018, §4): without it,
scale-invariant nets (BN, ReLU) would look sharp or flat depending only on their weight norms.
BN running statistics are buffers, not parameters, so they are never part of a direction.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from landscape.errors import CheckpointError, DivergedError, SpecError
from landscape.specs import (
    TRAINABLE,
    DeviceName,
    DirectionSpec,
    Ignore,
    LossName,
    Normalization,
    check_choice,
)

log = logging.getLogger(__name__)

Direction = dict[str, Tensor]

_EPS = 1e-10  # keeps an all-zero slice of δ at zero instead of NaN


def model_parameters(model: nn.Module) -> dict[str, Tensor]:
    """The model's parameters, detached, keyed by ``named_parameters()`` names."""
    return {name: p.detach() for name, p in model.named_parameters()}


def select_parameters(model: nn.Module, patterns: Sequence[str]) -> frozenset[str] | None:
    """The names of the parameters ``patterns`` choose (``DirectionSpec.params``), None for
    all of them (no patterns).

    An entry is an ``fnmatch`` glob over ``named_parameters()`` names, matched case-sensitively
    (``*`` crosses dots: ``layer3.*`` is the whole block), or ``trainable``: the parameters
    with ``requires_grad`` set (a fine-tuned net's adapters). An entry that matches nothing is
    a ``SpecError`` naming it and some names that exist: a typo must not plot nothing.
    """
    if not patterns:
        return None
    named = dict(model.named_parameters())
    chosen: set[str] = set()
    for pattern in patterns:
        if pattern == TRAINABLE:
            hits = {n for n, p in named.items() if p.requires_grad}
        else:
            hits = {n for n in named if fnmatch.fnmatchcase(n, pattern)}
        if not hits:
            raise SpecError(_no_match(pattern, list(named)))
        chosen |= hits
    return frozenset(chosen)


def _no_match(pattern: str, names: Sequence[str]) -> str:
    if pattern == TRAINABLE:
        return f"params {TRAINABLE!r}: the model has no parameter with requires_grad set"
    if len(names) > 6:  # the first and the last: a net's deep end is what subsets pick
        shown = f"{', '.join(names[:3])}, …, {', '.join(names[-3:])} ({len(names)} in all)"
    else:
        shown = ", ".join(names)
    return (
        f"params pattern {pattern!r} matches no parameter of the model; its parameters are "
        f"named {shown} (a glob such as 'layer3.*', or {TRAINABLE!r})"
    )


def _left_out(name: str, p: Tensor, ignore: Ignore, only: Collection[str] | None) -> bool:
    """Whether a direction's component for parameter ``name`` is zero: outside the chosen
    subset (``only``), or a 1-D parameter that ``ignore="biasbn"`` leaves out."""
    return (only is not None and name not in only) or (p.dim() <= 1 and ignore == "biasbn")


def random_direction(
    params: Mapping[str, Tensor],
    *,
    normalization: Normalization = "filter",
    ignore: Ignore = "biasbn",
    generator: torch.Generator | None = None,
    only: Collection[str] | None = None,
) -> Direction:
    """A Gaussian direction shaped like ``params``, normalized by ``normalize_direction``.

    The noise is drawn on the CPU from ``generator`` in ``named_parameters()`` order and only
    then moved to each parameter's device, so a seed gives the same direction on CPU and GPU.
    It is drawn for every parameter, also outside ``only`` (the subset kept; None: all), so a
    subset's direction is the full one's restricted to it (``global`` aside, whose one scale
    is the subset's).
    """
    raw = {
        name: torch.randn(p.shape, generator=generator, dtype=torch.float32).to(
            device=p.device, dtype=p.dtype
        )
        for name, p in params.items()
    }
    return normalize_direction(raw, params, normalization=normalization, ignore=ignore, only=only)


def normalize_direction(
    direction: Mapping[str, Tensor],
    params: Mapping[str, Tensor],
    *,
    normalization: Normalization = "filter",
    ignore: Ignore = "biasbn",
    only: Collection[str] | None = None,
) -> Direction:
    """Rescale ``direction`` to the size of ``params`` (returns new tensors).

    - ``filter`` (Li et al. 2018, §4: filter-wise normalization): for every output filter or
      neuron ``i`` (index 0 of a weight tensor), ``d_i ← d_i / ‖d_i‖ · ‖θ_i‖``.
    - ``layer``: the same rule with a whole parameter tensor as the unit.
    - ``weight`` (Li et al.'s code, ``net_plotter.normalize_direction(norm='weight')``):
      elementwise ``d ← d ⊙ θ``, so each weight moves in proportion to its own size.
    - ``global``: the ``filter`` rule with all the (non-ignored) parameters as one vector, so
      ``‖d‖ = ‖θ‖`` overall — the coarsest granularity (what ``weight`` meant in files whose
      root lacks the ``weight_normalization`` attr; docs/format.md).
    - ``none``: the Gaussian as drawn.

    1-D parameters (biases, BN affine) are zeroed for ``ignore="biasbn"`` (Li et al. §4: they
    are few and their scale is not comparable). With ``ignore="none"`` they are kept and
    normalized with the tensor as the unit (a bias vector belongs to a layer, not to a filter;
    a per-element rule would reduce it to ``±|θ_i|``). The original tool instead copies ``θ``
    into them; we keep the direction random so that ``x`` and ``y`` stay distinct.

    Parameters outside ``only`` (a subset of names; None: all) are zeroed like ignored ones:
    the rest of the network stays fixed along the direction.
    """
    check_choice("normalization", normalization, Normalization)
    check_choice("ignore", ignore, Ignore)
    missing = set(params) - set(direction)
    if missing:
        raise CheckpointError(f"direction lacks parameters: {', '.join(sorted(missing))}")
    out: Direction = {}
    for name, p in params.items():
        d = direction[name].detach().to(device=p.device, dtype=p.dtype).clone()
        if d.shape != p.shape:
            raise CheckpointError(
                f"direction {name!r} has shape {tuple(d.shape)}, parameter {tuple(p.shape)}"
            )
        if _left_out(name, p, ignore, only):
            d.zero_()
        elif normalization == "weight":
            d.mul_(p.detach())  # Li et al.'s code: direction.mul_(weights)
        elif normalization == "filter" and p.dim() > 1:
            # Li et al. 2018, §4: d_i ← d_i / ‖d_i‖ · ‖θ_i‖ per output filter i
            d_norm = d.flatten(1).norm(dim=1)
            w_norm = p.detach().flatten(1).norm(dim=1)
            scale = w_norm / (d_norm + _EPS)
            d.mul_(scale.view(-1, *([1] * (d.dim() - 1))))
        elif normalization in ("filter", "layer"):
            d.mul_(p.detach().norm() / (d.norm() + _EPS))
        out[name] = d
    if normalization == "global":
        # whole-model granularity: one scale for every kept tensor, ‖d‖ = ‖θ‖ over them
        kept = [n for n, p in params.items() if not _left_out(n, p, ignore, only)]
        d_sq = sum(float(out[n].double().pow(2).sum()) for n in kept)
        w_sq = sum(float(params[n].detach().double().pow(2).sum()) for n in kept)
        scale = (w_sq**0.5) / (d_sq**0.5 + _EPS)
        for n in kept:
            out[n].mul_(scale)
    return out


def make_directions(
    model: nn.Module,
    spec: DirectionSpec,
    ndim: int,
    *,
    data: tuple[Tensor, Tensor] | None = None,
    loss: str = "cross_entropy",
    device: DeviceName | str | None = None,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[list[Direction], dict[str, Any]]:
    """``ndim`` directions (x, then y, then z) for ``model`` as ``spec`` asks, and their
    provenance.

    The provenance dict holds plain values (JSON-ready) to store with the surface. ``hessian``
    directions are the top eigenvectors of the Hessian of the mean ``loss`` over ``data``,
    computed on ``device`` (``auto``/``cpu``/``cuda``/``cuda:N``; None: where the model's
    parameters are) — the model stays where it is, and the directions are on its device.
    Their Lanczos run, the one long step here, reports ``on_step(steps, max_steps)`` and
    raises ``CancelledError`` once ``should_stop()``. ``spec.params`` restricts every kind to
    a subset (``select_parameters``): zero outside it; the Hessian is the subset's block.
    """
    if ndim not in (1, 2, 3):
        raise ValueError(f"ndim must be 1, 2 or 3, got {ndim}")
    params = model_parameters(model)
    only = select_parameters(model, spec.params)
    info: dict[str, Any] = {
        "kind": spec.kind,
        "normalization": spec.normalization,
        "ignore": spec.ignore,
        "seed": spec.seed,
    }
    if only is not None:
        info.update(_subset_info(params, only, spec))
    generator = torch.Generator(device="cpu").manual_seed(spec.seed)
    if spec.kind == "random":
        dirs = [
            random_direction(
                params,
                normalization=spec.normalization,
                ignore=spec.ignore,
                generator=generator,
                only=only,
            )
            for _ in range(ndim)
        ]
    elif spec.kind == "interpolate":
        assert spec.target_checkpoint is not None  # DirectionSpec checks it
        target = _load_params(spec.target_checkpoint, model)
        dirs = [interpolation_direction(params, target, only=only)]
        info["target_checkpoint"] = spec.target_checkpoint
        for _ in range(ndim - 1):
            # y (and z): filter-normalized random directions, not orthogonalized against x: in
            # the >10⁵ dimensions of these nets independent Gaussians are nearly orthogonal
            # (cosine ~ 1/√n), and projecting would break their filter-wise norms.
            dirs.append(
                random_direction(
                    params,
                    normalization=spec.normalization,
                    ignore=spec.ignore,
                    generator=generator,
                    only=only,
                )
            )
    elif spec.kind == "three_point":
        dirs, plane_info = _three_point(model, spec, ndim, only)
        info.update(plane_info)
    elif spec.kind == "hessian":
        dirs, hessian_info = _hessian(
            model, spec, ndim, data, loss, device, on_step, should_stop, only
        )
        info.update(hessian_info)
    else:
        snapshots = [_load_params(path, model) for path in spec.trajectory]
        dirs, pca_info = pca_directions(
            params, snapshots, ndim=ndim, ignore=spec.ignore,
            labels=[Path(p).name for p in spec.trajectory], only=only,
        )  # fmt: skip
        info.update(pca_info)
        info["trajectory"] = list(spec.trajectory)
    return dirs, info


def _subset_info(
    params: Mapping[str, Tensor], only: Collection[str], spec: DirectionSpec
) -> dict[str, Any]:
    """What a restricted direction set moves, for its provenance; a subset that ``ignore``
    would empty (only biases and BN affine with ``biasbn``) is refused, not plotted flat."""
    ignore: Ignore = (
        "none" if spec.kind in ("interpolate", "hessian", "three_point") else spec.ignore
    )
    moved = [n for n, p in params.items() if not _left_out(n, p, ignore, only)]
    if not moved:
        raise SpecError(
            f"params {', '.join(spec.params)} select only 1-D parameters (biases, BN affine), "
            f"which ignore 'biasbn' leaves out: nothing would move; use ignore 'none'"
        )
    return {
        "params": list(spec.params),
        "params_selected": len(only),
        "params_numel": sum(params[n].numel() for n in only),
        "params_total_numel": sum(p.numel() for p in params.values()),
    }


def _three_point(
    model: nn.Module, spec: DirectionSpec, ndim: int, only: Collection[str] | None
) -> tuple[list[Direction], dict[str, Any]]:
    """The plane through the model and ``spec.through_checkpoints`` (every parameter, BN
    affine included, whatever ``ignore`` says; buffers stay the model's), and the three nets'
    coordinates in it (``landscape.checkpoint_plane``)."""
    from landscape.checkpoint_plane import three_point_directions
    from landscape.sources.checkpoint import file_digest

    if ndim != 2:
        raise SpecError(f"directions of kind 'three_point' span a plane: a 2D grid, not {ndim}D")
    try:
        second, third = (_load_params(path, model) for path in spec.through_checkpoints)
    except CheckpointError as exc:
        raise CheckpointError(
            f"three_point: {exc}; the three nets must share one architecture"
        ) from exc
    names = ("checkpoint", *(Path(p).name for p in spec.through_checkpoints))
    dirs, info = three_point_directions(
        model_parameters(model), second, third, names=names, only=only
    )
    info["through_checkpoints"] = list(spec.through_checkpoints)
    info["through_checkpoints_sha256"] = [file_digest(p) for p in spec.through_checkpoints]
    return dirs, info


def _hessian(
    model: nn.Module,
    spec: DirectionSpec,
    ndim: int,
    data: tuple[Tensor, Tensor] | None,
    loss: str,
    device: DeviceName | str | None,
    on_step: Callable[[int, int], None] | None,
    should_stop: Callable[[], bool] | None,
    only: Collection[str] | None,
) -> tuple[list[Direction], dict[str, Any]]:
    """Hessian eigenvectors (of the block of ``only``, None: all) at ``spec.hessian_ends``
    (Lanczos seeded by ``spec.seed``, at most ``spec.max_lanczos_steps`` steps), products on
    ``device``, in strict fp32 (the engine's precision policy for Hessian products). Filter or layer
    normalization would change which direction an eigenvector is, so it is scaled as a whole:
    by ``‖θ‖`` (coordinates comparable to filter-normalized ±1) unless normalization is
    ``none`` (unit length)."""
    from landscape.analysis.hessian import LanczosOptions
    from landscape.analysis.hessian_directions import hessian_directions

    if data is None:
        raise CheckpointError("Hessian directions need the data whose loss the Hessian is of")
    check_choice("loss of Hessian directions", loss, LossName)  # losses of the outputs alone
    dirs, info = hessian_directions(
        model,
        data,
        ndim,
        scale="unit" if spec.normalization == "none" else "weight",
        loss=cast(LossName, loss),
        device=str(next(model.parameters()).device) if device is None else device,
        options=LanczosOptions(seed=spec.seed),
        max_steps=spec.max_lanczos_steps,
        ends=spec.hessian_ends,
        on_step=on_step,
        should_stop=should_stop,
        params=only,
    )
    params = model_parameters(model)
    moved = [{n: d[n].to(device=p.device, dtype=p.dtype) for n, p in params.items()} for d in dirs]
    return moved, info


def interpolation_direction(
    params: Mapping[str, Tensor],
    target: Mapping[str, Tensor],
    *,
    only: Collection[str] | None = None,
) -> Direction:
    """``θ_target − θ`` for every parameter (Goodfellow et al. 2015, linear interpolation).

    Every parameter is kept, BN affine included, so that ``x = 1`` is the target's weights
    (its BN running statistics are not interpolated: they are buffers of the base model);
    with ``only`` (a subset of names) the others are zero: ``x = 1`` is the target's weights
    on the subset, the base model's elsewhere.
    """
    if set(params) != set(target):
        diff = sorted(set(params) ^ set(target))
        raise CheckpointError(f"checkpoints have different parameters: {', '.join(diff[:5])}")
    out: Direction = {}
    for name, p in params.items():
        t = target[name].to(device=p.device, dtype=p.dtype)
        if t.shape != p.shape:
            raise CheckpointError(
                f"parameter {name!r} has shape {tuple(t.shape)} in the target, "
                f"{tuple(p.shape)} in the model"
            )
        out[name] = (t - p.detach()).clone()
        if only is not None and name not in only:
            out[name].zero_()
    return out


def pca_directions(
    params: Mapping[str, Tensor],
    snapshots: Sequence[Mapping[str, Tensor]],
    *,
    ndim: int = 2,
    ignore: Ignore = "biasbn",
    labels: Sequence[str] | None = None,
    only: Collection[str] | None = None,
) -> tuple[list[Direction], dict[str, Any]]:
    """Top principal components of ``snapshot_i − θ`` over a training trajectory (Li et al.
    2018, §7), as unit vectors in parameter space.

    Like the reference tool (scikit-learn's ``PCA``) the rows are centered before the SVD;
    explained variance ratios are ``σ_k² / Σσ²``. Signs are fixed so each component's largest
    entry is positive (deterministic across runs and BLAS builds). 1-D parameters are left out
    for ``ignore="biasbn"``, matching random directions. ``trajectory_coords`` are the
    snapshots' coordinates in the plane, for drawing the path on the surface. A trajectory
    with non-finite weights (a diverged run) is a ``DivergedError`` naming the snapshots
    (``labels``: their names) where it went, not an SVD failure. With ``only`` (a subset of
    names) the components are those of the subset's trajectory, zero elsewhere.
    """
    if len(snapshots) < ndim + 1:
        raise CheckpointError(f"PCA of {ndim} components needs > {ndim} snapshots")
    names = [n for n, p in params.items() if not _left_out(n, p, ignore, only)]
    if not all(bool(torch.isfinite(params[n]).all()) for n in names):
        raise DivergedError(
            "PCA directions: the checkpoint's own weights are not finite (its training "
            "diverged); retrain it with a lower learning rate"
        )
    rows = []
    for snap in snapshots:
        diff = interpolation_direction(params, snap)
        rows.append(torch.cat([diff[n].double().flatten().cpu() for n in names]).numpy())
    matrix = np.stack(rows)  # (n_snapshots, n_params)
    _check_finite_trajectory(matrix, labels)
    centered = matrix - matrix.mean(axis=0, keepdims=True)
    try:
        _, sigma, vt = np.linalg.svd(centered, full_matrices=False)
    except np.linalg.LinAlgError as exc:  # finite but so large that the SVD overflows
        raise DivergedError(
            f"PCA directions: the trajectory's weights are too large to decompose ({exc}); "
            "its training diverged: lower the learning rate"
        ) from exc
    variance = sigma**2
    ratio = variance / variance.sum() if variance.sum() > 0 else np.zeros_like(variance)
    components = vt[:ndim]
    signs = np.sign(components[np.arange(ndim), np.abs(components).argmax(axis=1)])
    components = components * signs[:, None]
    dirs: list[Direction] = []
    for comp in components:
        d: Direction = {}
        offset = 0
        for name, p in params.items():
            if name in names:
                n = p.numel()
                chunk = torch.from_numpy(comp[offset : offset + n].copy())
                d[name] = chunk.view(p.shape).to(device=p.device, dtype=p.dtype)
                offset += n
            else:
                d[name] = torch.zeros_like(p)
        dirs.append(d)
    info = {
        "explained_variance_ratio": [float(r) for r in ratio[:ndim]],
        "trajectory_coords": (matrix @ components.T).tolist(),
    }
    return dirs, info


def _check_finite_trajectory(matrix: np.ndarray, labels: Sequence[str] | None) -> None:
    """Name the snapshots whose weights are NaN or infinite: the run diverged from the first."""
    bad = [i for i, row in enumerate(matrix) if not np.isfinite(row).all()]
    if not bad:
        return
    named = [labels[i] if labels is not None else f"#{i}" for i in bad]
    listed = ", ".join(named[:5]) + (f" and {len(named) - 5} more" if len(named) > 5 else "")
    raise DivergedError(
        f"PCA directions: {len(bad)} of {len(matrix)} trajectory snapshots hold non-finite "
        f"weights ({listed}): the training diverged there. Lower the learning rate, or use "
        "the snapshots before it"
    )


def _load_params(path: str, model: nn.Module) -> dict[str, Tensor]:
    """Parameters of the checkpoint at ``path``, which must fit ``model``'s parameter names."""
    from landscape.sources.checkpoint import load_checkpoint  # the zoo is only needed here

    other, _ = load_checkpoint(path)
    params = model_parameters(other)
    expected = set(model_parameters(model))
    if set(params) != expected:
        raise CheckpointError(f"{path}: its parameters do not match the model's")
    device = next(model.parameters()).device
    return {n: p.to(device) for n, p in params.items()}
