"""SLQ against exact spectra: an explicit matrix and the dense Hessian of a small model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape.analysis.hessian import HessianOperator
from landscape.analysis.spectral_density import (
    gauss_quadrature,
    lanczos_tridiagonal,
    ritz_extremes,
    spectral_density,
)
from landscape.errors import SpecError


def _symmetric(n: int, seed: int = 0) -> np.ndarray:
    a = np.random.default_rng(seed).standard_normal((n, n))
    return (a + a.T) / 2


def test_quadrature_is_exact_for_polynomials_of_low_degree() -> None:
    a = _symmetric(40)
    v = np.random.default_rng(1).standard_normal(40)
    v /= np.linalg.norm(v)
    alpha, beta = lanczos_tridiagonal(lambda x: a @ x, v, 6)
    nodes, weights = gauss_quadrature(alpha, beta)
    assert len(nodes) == 6 and weights.sum() == pytest.approx(1.0)
    for k in range(12):  # degree <= 2m - 1 = 11
        exact = v @ np.linalg.matrix_power(a, k) @ v
        assert (weights * nodes**k).sum() == pytest.approx(exact, rel=1e-8, abs=1e-8)


def test_full_lanczos_recovers_every_eigenvalue() -> None:
    a = _symmetric(30)
    result = spectral_density(lambda x: a @ x, 30, n_probes=2, steps=30, seed=3)
    exact = np.linalg.eigvalsh(a)
    np.testing.assert_allclose(np.sort(result.nodes[0]), exact, atol=1e-8)
    assert result.top == pytest.approx(exact[-1]) and result.bottom == pytest.approx(exact[0])
    assert result.matvecs == 60


def test_early_stop_on_an_exhausted_krylov_space() -> None:
    diag = np.repeat([1.0, 2.0, 5.0], 10)  # 3 distinct eigenvalues: Krylov space of size 3
    result = spectral_density(lambda x: diag * x, 30, n_probes=1, steps=20)
    finite = result.nodes[np.isfinite(result.nodes)]
    np.testing.assert_allclose(np.sort(finite), [1.0, 2.0, 5.0], atol=1e-9)
    assert result.cdf(1.5) == pytest.approx(1 / 3, abs=0.15)


def test_ritz_extremes_pin_outliers_in_few_steps() -> None:
    """A bulk of 500 eigenvalues in [0, 1] and two outliers, -3 and 20, as in a trained net's
    Hessian away from a minimum: 25 steps find both outliers to their residual norms."""
    rng = np.random.default_rng(0)
    eigenvalues = np.concatenate([rng.uniform(0, 1, 500), [-3.0, 20.0]])
    q, _ = np.linalg.qr(rng.standard_normal((502, 502)))
    a = (q * eigenvalues) @ q.T
    ends = ritz_extremes(lambda v: a @ v, rng.standard_normal(502), 25)
    assert ends.steps == 25
    assert ends.low == pytest.approx(-3.0, abs=max(ends.low_residual, 1e-6))
    assert ends.high == pytest.approx(20.0, abs=max(ends.high_residual, 1e-6))
    assert ends.low_residual < 1e-3 and ends.high_residual < 1e-3
    assert ends.low >= -3.0 - 1e-9 and ends.high <= 20.0 + 1e-9  # interlacing: from inside


def test_ritz_extremes_exhausted_krylov_space_is_exact() -> None:
    diag = np.repeat([-1.0, 2.0, 5.0], 10)
    ends = ritz_extremes(lambda x: diag * x, np.ones(30), 20)
    assert ends.steps == 3 and ends.low_residual == 0.0 and ends.high_residual == 0.0
    assert ends.low == pytest.approx(-1.0) and ends.high == pytest.approx(5.0)
    with pytest.raises(SpecError, match="steps"):
        ritz_extremes(lambda x: diag * x, np.ones(30), 0)


def test_a_spectrum_far_below_one_gets_its_steps() -> None:
    """Exhaustion is judged relative to the spectrum's scale, not to 1."""
    a = _symmetric(20) * 1e-12
    result = spectral_density(lambda x: a @ x, 20, n_probes=1, steps=20, seed=0)
    np.testing.assert_allclose(np.sort(result.nodes[0]), np.linalg.eigvalsh(a), atol=1e-20)


def _tiny_hessian() -> tuple[HessianOperator, np.ndarray]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    g = torch.Generator().manual_seed(2)
    data = (torch.randn(40, 4, generator=g), torch.randint(0, 3, (40,), generator=g))
    operator = HessianOperator(model, data, device="cpu", dtype=torch.float64)
    return operator, np.linalg.eigvalsh(operator.dense())


@pytest.mark.slow
def test_density_agrees_with_the_dense_hessian() -> None:
    operator, exact = _tiny_hessian()
    n = operator.n
    assert n == 51
    result = spectral_density(operator.matvec, n, n_probes=20, steps=25, seed=0)
    # the mean eigenvalue trace/n: Hutchinson's error over 20 probes, ~4 standard errors
    per_probe = [
        (w[np.isfinite(x)] * x[np.isfinite(x)]).sum()
        for x, w in zip(result.nodes, result.weights, strict=True)
    ]
    stderr = np.std(per_probe, ddof=1) / np.sqrt(len(per_probe))
    assert result.moment(1) == pytest.approx(exact.mean(), abs=4 * stderr + 1e-12)
    assert result.moment(2) == pytest.approx(np.mean(exact**2), rel=0.25)
    assert result.top == pytest.approx(exact[-1], rel=1e-6)
    assert result.bottom == pytest.approx(exact[0], rel=1e-3, abs=1e-6)
    assert np.trapezoid(result.density, result.grid) == pytest.approx(1.0, abs=1e-3)
    # a different seed gives different probes, the same seed the same numbers
    again = spectral_density(operator.matvec, n, n_probes=20, steps=25, seed=0)
    np.testing.assert_array_equal(again.nodes, result.nodes)


@pytest.mark.slow
def test_cdf_agrees_with_the_eigenvalue_histogram() -> None:
    """With ``steps = n`` every probe's nodes are the eigenvalues; the probe-averaged weights
    estimate each one's share 1/n, so the CDF matches the histogram up to probe noise."""
    operator, exact = _tiny_hessian()
    result = spectral_density(operator.matvec, operator.n, n_probes=15, steps=operator.n)
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        t = float(np.quantile(exact, q))
        assert result.cdf(t) == pytest.approx(np.mean(exact <= t), abs=0.1), q
    low, high = float(np.quantile(exact, 0.3)), float(np.quantile(exact, 0.6))
    inside = (result.grid >= low) & (result.grid <= high)
    share = np.trapezoid(result.density[inside], result.grid[inside])
    assert share == pytest.approx(np.mean((exact >= low) & (exact <= high)), abs=0.15)


def test_gaussian_probes_and_bad_arguments() -> None:
    a = np.diag(np.linspace(-1.0, 3.0, 20))
    result = spectral_density(lambda x: a @ x, 20, probe="gaussian", n_probes=30, steps=20)
    assert result.moment(1) == pytest.approx(1.0, abs=0.3)
    assert result.to_dict()["probe"] == "gaussian"
    with pytest.raises(SpecError, match="probe"):
        spectral_density(lambda x: x, 3, probe="uniform")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="n_probes"):
        spectral_density(lambda x: x, 3, n_probes=0)
