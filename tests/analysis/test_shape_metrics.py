"""Shape metrics — the new scale-free ones and the existing surface metrics — on analytic
surfaces whose answers are known: a paraboloid, a saddle and a Rastrigin function."""

from __future__ import annotations

import math

import numpy as np
import pytest

from landscape.analysis.shape_metrics import (
    curvature_nonconvex_fraction,
    curvature_ratio,
    level_set_convexity,
    local_minima_count,
    shape_metrics,
)
from landscape.analysis.surface_metrics import surface_metrics

AXIS = np.linspace(-1.0, 1.0, 41)  # step 0.05: the sharpness radius 0.25 is 5 steps
XX, YY = np.meshgrid(AXIS, AXIS)  # (ny, nx), as the surface's
PARABOLOID = 3.0 * (XX**2 + YY**2)
SADDLE = XX**2 - YY**2
R_AXIS = np.linspace(-4.5, 4.5, 181)
RX, RY = np.meshgrid(R_AXIS, R_AXIS)
RASTRIGIN = 20 + RX**2 - 10 * np.cos(2 * np.pi * RX) + RY**2 - 10 * np.cos(2 * np.pi * RY)


def test_curvature_fraction_counts_points_above_the_threshold() -> None:
    lmax = np.array([[1.0, 2.0], [4.0, 1.0]])
    lmin = np.array([[0.5, -0.1], [-2.0, -0.05]])  # ratios 0 (convex), 0.05, 0.5, 0.05
    np.testing.assert_allclose(curvature_ratio(lmin, lmax), [[0, 0.05], [0.5, 0.05]])
    assert curvature_nonconvex_fraction(lmin, lmax) == 0.25
    assert curvature_nonconvex_fraction(lmin, lmax, threshold=0.01) == 0.75
    # no positive curvature at all: a maximum, never convex
    assert curvature_nonconvex_fraction(np.array([-1.0]), np.array([-0.5])) == 1.0
    assert math.isnan(curvature_nonconvex_fraction(np.array([np.nan]), np.array([1.0])))


def test_analytic_hessians_through_the_curvature_fraction() -> None:
    """The exact Hessians: paraboloid diag(6, 6) everywhere, saddle diag(2, −2)."""
    ones = np.ones((5, 5))
    assert curvature_nonconvex_fraction(6 * ones, 6 * ones) == 0.0
    assert curvature_nonconvex_fraction(-2 * ones, 2 * ones) == 1.0


def test_level_set_convexity_on_analytic_surfaces() -> None:
    assert level_set_convexity(PARABOLOID) == 1.0  # convex sublevel sets: exactly 1
    assert level_set_convexity(np.log1p(PARABOLOID)) == 1.0  # any increasing transform
    assert level_set_convexity(np.sqrt(XX**2 + 4 * YY**2)) == 1.0  # elliptic cone
    saddle = level_set_convexity(SADDLE)
    rastrigin = level_set_convexity(RASTRIGIN)
    assert saddle < 0.75
    assert rastrigin < 0.5
    # a sublevel set on one grid line (a degenerate hull) is convex when it has no gaps
    assert level_set_convexity(np.abs(YY), quantiles=(0.02,)) == 1.0
    gapped = np.abs(YY) + (np.abs(XX) < 0.3) * (np.abs(YY) < 0.01)
    assert level_set_convexity(gapped, quantiles=(0.01,)) < 1.0
    # 1D: a bowl is one interval; two wells are not
    assert level_set_convexity(AXIS**2) == 1.0
    assert level_set_convexity((AXIS**2 - 0.5) ** 2) < 0.8


def test_local_minima_on_analytic_surfaces() -> None:
    assert local_minima_count(PARABOLOID) == 1
    assert local_minima_count(SADDLE) == 0
    assert local_minima_count(RASTRIGIN) == 81  # one per integer point of [-4, 4]²
    assert local_minima_count((AXIS**2 - 0.5) ** 2) == 2
    summary = shape_metrics(PARABOLOID + 1.0)
    assert summary["local_minima"] == 1.0
    assert summary["log10_loss_span"] == pytest.approx(np.log10(7.0))


def test_existing_metrics_on_a_paraboloid() -> None:
    m = surface_metrics(AXIS, AXIS, {"train_loss": PARABOLOID})
    assert m["convex_fraction"] == 1.0
    assert m["train_loss_nonconvexity"] == 0.0
    assert m["roughness"] == pytest.approx(0.0, abs=1e-12)  # third differences of a quadratic
    # Keskar ε-sharpness at radius 0.25 from f(0) = 0: 100 · 3 · 0.25² / (1 + 0)
    assert m["sharpness"] == pytest.approx(100 * 3 * 0.25**2)
    assert m["train_loss_center"] == 0.0 and m["train_loss_max"] == pytest.approx(6.0)


def test_existing_metrics_on_a_saddle_and_rastrigin() -> None:
    saddle = surface_metrics(AXIS, AXIS, {"train_loss": SADDLE})
    assert saddle["convex_fraction"] == 0.0  # finite-difference Hessian diag(2, −2) everywhere
    assert saddle["train_loss_nonconvexity"] == pytest.approx(1.0)
    assert saddle["roughness"] == pytest.approx(0.0, abs=1e-12)
    rough = surface_metrics(R_AXIS, R_AXIS, {"train_loss": RASTRIGIN})
    assert 0.2 < rough["convex_fraction"] < 0.8
    assert rough["roughness"] > 1e-3
