"""``analyze``: one Hessian analysis from an ``AnalysisSpec``, the call the CLI and the API make.

Spectrum (Lanczos extreme eigenvalues, Hutchinson trace) first, then the eigenvalue density
(stochastic Lanczos quadrature), then the spectrum again on disjoint subsets of the data
(``data_spread``), then the curvature map over a surface's plane; with a
surface, the checkpoint's bytes must be the surface's and the result replaces the file's
``hessian/`` group in one atomic write (nothing is stored unless every step finished).
Progress is ``on_progress(done, total)`` in steps: the spectrum is one step, the density one,
each subset of the spread one, each map point one; ``should_stop`` is asked between steps and
before every Hessian-vector product, so a cancel stops a Lanczos run within one product.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from landscape.analysis.curvature import coarse_indices, curvature_map
from landscape.analysis.data_spread import data_spread, split_blocks
from landscape.analysis.group import GROUP_NAME, group_contents
from landscape.analysis.hessian import HessianOperator, LanczosOptions, hessian_spectrum
from landscape.analysis.plane_curvature import plane_curvature
from landscape.analysis.provenance import surface_of_checkpoint
from landscape.analysis.spectral_density import spectral_density
from landscape.directions import select_parameters
from landscape.errors import CancelledError, SpecError
from landscape.specs import AnalysisSpec, to_dict

ARPACK_GUESS = 60  # products ARPACK takes for one end on a trained net, roughly


def analysis_costs(spec: AnalysisSpec, x: np.ndarray | None, y: np.ndarray | None) -> list[int]:
    """Estimated Hessian-vector products of each progress step, in order, so a progress bar's
    ETA can weigh them (a spectrum step can cost as much as the whole map). ARPACK's count is
    a guess: ``ARPACK_GUESS`` per end."""
    arpack = ARPACK_GUESS * (int(spec.top > 0) + int(spec.bottom > 0))
    costs = []
    if spec.spectrum:
        costs.append((spec.spectrum_steps or arpack) + spec.trace_samples)
    if spec.density_probes:
        costs.append(spec.density_probes * spec.density_steps)
    if spec.data_spread:  # the spectrum again, on each subset
        costs += [costs[0]] * spec.data_spread
    points = analysis_steps(spec, x, y) - len(costs)
    costs += [spec.curvature_steps or 2 * ARPACK_GUESS] * points
    return costs


def analysis_steps(spec: AnalysisSpec, x: np.ndarray | None, y: np.ndarray | None) -> int:
    """Progress units of ``spec`` on a surface with coordinates ``x``, ``y``."""
    points = 0
    if spec.curvature_grid and x is not None:
        points = len(coarse_indices(len(x), spec.curvature_grid))
        if y is not None:
            points *= len(coarse_indices(len(y), spec.curvature_grid))
    return int(spec.spectrum) + int(spec.density_probes > 0) + spec.data_spread + points


def analyze(
    spec: AnalysisSpec,
    surface: str | Path | None = None,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Compute the analysis; with ``surface``, store it there. Returns the group's contents."""
    from landscape import storage
    from landscape.data import load_data
    from landscape.sources.checkpoint import file_digest, load_checkpoint

    if spec.curvature_grid and surface is None:
        raise SpecError("a curvature map needs a surface (its directions and grid)")
    digest = file_digest(spec.checkpoint)
    stored = surface_of_checkpoint(spec.checkpoint, digest, surface)
    x = stored.x if stored is not None else None
    y = stored.y if stored is not None else None
    total = analysis_steps(spec, x, y)

    def report(done: int) -> None:
        if on_progress is not None:
            on_progress(done, total)
        if done < total and should_stop is not None and should_stop():
            raise CancelledError(f"analysis stopped after {done} of {total} steps")

    report(0)
    model, _ = load_checkpoint(spec.checkpoint)
    only = select_parameters(model, spec.params)  # None: every parameter
    data = load_data(spec.data, spec.split)
    blocks = []
    if spec.data_spread:
        size = spec.data.train_size if spec.split == "train" else spec.data.test_size
        whole = load_data(replace(spec.data, train_size=None, test_size=None), spec.split)
        blocks = split_blocks(whole, size, spec.data_spread)
    products: dict[str, Any] = {
        "loss": spec.loss,
        "device": spec.device,
        "dtype": getattr(torch, spec.dtype),
        "batch_size": spec.batch_size,
        "should_stop": should_stop,
        "params": only,
    }
    common = {
        **products,
        "options": LanczosOptions(tol=spec.tol, maxiter=spec.maxiter, seed=spec.seed),
    }
    result = None
    if spec.spectrum:
        result = hessian_spectrum(
            model,
            data,
            top=spec.top,
            bottom=spec.bottom,
            trace_samples=spec.trace_samples,
            steps=spec.spectrum_steps,
            **common,
        )
        report(1)
    density = None
    if spec.density_probes:
        operator = HessianOperator(model, data, **products)
        density = spectral_density(
            operator.matvec,
            operator.n,
            n_probes=spec.density_probes,
            steps=spec.density_steps,
            seed=spec.seed,
        )
        report(int(spec.spectrum) + 1)
    before = int(spec.spectrum) + int(density is not None)
    spread = None
    if blocks:
        spread = data_spread(
            model,
            blocks,
            top=spec.top > 0,
            bottom=spec.bottom > 0,
            trace_samples=spec.trace_samples,
            steps=spec.spectrum_steps,
            on_block=lambda done: report(before + done),
            **common,
        )
    plane = None
    if stored is not None and surface is not None:  # two products: no progress step of its own
        plane = plane_curvature(
            HessianOperator(model, data, **products),
            storage.read_directions(surface),
            stored,
            split=spec.split,
            loss=spec.loss,
        )
    curvature = None
    if spec.curvature_grid and stored is not None and surface is not None:
        offset = before + spec.data_spread
        curvature = curvature_map(
            model,
            data,
            storage.read_directions(surface),
            stored.x,
            stored.y,
            n=spec.curvature_grid,
            steps=spec.curvature_steps,
            on_progress=lambda done, _points: report(offset + done),
            **common,
        )
    provenance = {
        "checkpoint": Path(spec.checkpoint).name,
        "checkpoint_sha256": digest,
        "split": spec.split,
        "loss": spec.loss,
        "data": {**to_dict(spec.data), "data_root": None},
    }
    if spec.params:  # the Hessian of a parameter subset, the rest held fixed
        provenance["params"] = list(spec.params)
    arrays, attrs = group_contents(
        result, curvature, provenance, density=density, spread=spread, plane=plane
    )
    if surface is not None:
        storage.write_group(surface, GROUP_NAME, arrays, attrs)
    return arrays, attrs
