"""The density's negative mass against exact spectra with a cluster of exact zeros, where the
Gauss nodes' count of eigenvalues <= 0 swings with the sign of the one node next to 0."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape.analysis import group_contents, group_summary
from landscape.analysis.group import density_from_group
from landscape.analysis.hessian import HessianOperator
from landscape.analysis.negative_mass import radau_split
from landscape.analysis.spectral_density import _lanczos, spectral_density


def _dead_input_net() -> tuple[HessianOperator, np.ndarray]:
    """A tanh MLP away from a minimum whose inputs are zero in 12 of 16 features: the weights
    from those features have an exactly zero Hessian, 96 of the 163 eigenvalues."""
    torch.manual_seed(0)
    x = torch.zeros(32, 16, dtype=torch.float64)
    x[:, :4] = torch.randn(32, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (32,))
    model = nn.Sequential(nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    for p in model.parameters():
        nn.init.normal_(p, std=1.5)
    operator = HessianOperator(model, (x, y), device="cpu", dtype=torch.float64)
    return operator, np.linalg.eigvalsh(operator.dense())


def test_negative_mass_of_a_net_with_a_zero_cluster_matches_the_dense_spectrum() -> None:
    operator, exact = _dead_input_net()
    scale = np.abs(exact).max()
    assert np.mean(np.abs(exact) < 1e-12 * scale) > 0.55  # the zero cluster
    true = float(np.mean(exact < -1e-6))
    density = spectral_density(operator.matvec, operator.n, n_probes=5, steps=40, seed=0)
    arrays, attrs = group_contents(None, density=density)
    shown = group_summary(arrays, attrs)["density"]
    assert shown["negative_fraction"] == pytest.approx(true, abs=0.05)
    low, high = shown["negative_interval"]
    assert low <= true <= high
    assert shown["negative_fraction"] <= shown["negative_fraction_max"]
    assert 0 < shown["negative_epsilon"] < 1e-4 * scale
    stored = density_from_group(arrays, attrs)
    assert stored is not None and stored.negative_mass == density.negative_mass


@pytest.mark.parametrize("steps", [8, 20, 45])
def test_radau_bounds_hold_for_each_probe(steps: int) -> None:
    """Half the eigenvalues exactly 0, 14 % negative: each probe's exact mass below −ε (from
    the eigenvectors) lies within the Gauss–Radau bounds at every step count."""
    rng = np.random.default_rng(1)
    n = 300
    eigenvalues = np.concatenate([np.zeros(150), -rng.exponential(0.2, 42),
                                  rng.exponential(0.5, 104), [4.0, 7.0, 9.0, 15.0]])  # fmt: skip
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = (q * eigenvalues) @ q.T
    eps = 1e-5 * 15.0
    for _ in range(4):
        v = rng.integers(0, 2, n).astype(np.float64) * 2 - 1
        v /= np.linalg.norm(v)
        mass = float(((q.T @ v) ** 2)[eigenvalues < -eps].sum())
        below, at = radau_split(*_lanczos(lambda u: a @ u, v, steps), -eps)
        assert below - 1e-9 <= mass <= below + at + 1e-9
        assert at > 0.4  # the zero cluster is what the moments cannot place
    density = spectral_density(lambda u: a @ u, n, n_probes=6, steps=45, seed=0)
    negative = density.negative_mass
    assert negative is not None and negative.fraction == pytest.approx(0.14, abs=0.05)
    assert abs(density.cdf(0.0) - 0.14) > 0.3  # the Gauss count the figure no longer is


def test_an_exhausted_krylov_space_is_exact() -> None:
    diag = np.repeat([-2.0, 0.0, 3.0], [5, 10, 5])
    below, at = radau_split(*_lanczos(lambda u: diag * u, np.ones(20), 10), -1e-5)
    assert below == pytest.approx(0.25) and at == 0.0
