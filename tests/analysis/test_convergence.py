"""Every Lanczos result says whether it converged: residual norms against the tolerance, for
the spectrum (fixed steps and ARPACK) and each curvature-map point, through the stored group
to the CLI's table. Checked against the dense Hessian of a tiny model."""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn

from landscape.analysis.curvature import curvature_map
from landscape.analysis.group import group_contents, group_summary
from landscape.analysis.hessian import HessianOperator, LanczosOptions, hessian_spectrum
from landscape.cli.hessian_cmd import format_table


def _tiny() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x = torch.randn(40, 4, dtype=torch.float64)
    return model, (x, torch.randint(0, 3, (40,)))


def test_too_few_steps_say_not_converged_and_enough_match_the_dense_spectrum() -> None:
    model, data = _tiny()
    dense = np.linalg.eigvalsh(HessianOperator(model, data, dtype=torch.float64).dense())
    options = LanczosOptions(tol=1e-6)
    short = hessian_spectrum(model, data, top=2, bottom=1, dtype=torch.float64, steps=3,
                             options=options, device="cpu")  # fmt: skip
    assert not short.converged
    assert np.max(short.top_residuals) > short.tolerance
    full = hessian_spectrum(model, data, top=2, bottom=1, dtype=torch.float64, steps=43,
                            options=options, device="cpu")  # fmt: skip
    assert full.converged
    np.testing.assert_allclose(full.top, dense[::-1][:2], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(full.bottom, dense[:1], rtol=1e-6, atol=1e-9)
    arpack = hessian_spectrum(model, data, top=2, bottom=1, dtype=torch.float64,
                              options=options, device="cpu")  # fmt: skip
    assert arpack.converged and len(arpack.top_residuals) == 2

    table = format_table(group_summary(*group_contents(short)))
    assert "NOT converged (residual" in table and "vs tol" in table
    assert re.search(r"converged +yes", format_table(group_summary(*group_contents(full))))


def test_each_map_point_records_its_convergence() -> None:
    model, data = _tiny()
    torch.manual_seed(1)
    directions = [{n: torch.randn_like(p) * 0.1 for n, p in model.named_parameters()}
                  for _ in range(2)]  # fmt: skip
    grid = np.linspace(-1, 1, 3)
    kwargs = {"n": 2, "dtype": torch.float64, "device": "cpu",
              "options": LanczosOptions(tol=1e-6)}  # fmt: skip
    short = curvature_map(model, data, directions, grid, grid, steps=2, **kwargs)
    assert short.converged.shape == (2, 2) and not short.converged.any()
    full = curvature_map(model, data, directions, grid, grid, steps=43, **kwargs)
    assert full.converged.all()
    summary = group_summary(*group_contents(None, short))
    assert summary["curvature_map"]["not_converged"] == 4
    assert "4 of 4 points NOT converged" in format_table(summary)
