"""A Hessian job's time is estimated from the products ARPACK is expected to make, its
budget from the cap: top eigenvalues converge long before ARPACK's cap (top 10 of the form's
trained net: 38 products of 241), so pricing the time at the cap over-estimated it 3-20×."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from api.planning.budget import check_budget
from api.planning.cost import (
    ARPACK_EXPECTED_RESTARTS,
    arpack_expected,
    arpack_products,
    data_shape,
    hessian_estimate,
    net_cost,
)
from landscape.analysis.hessian import HessianOperator, LanczosOptions, arpack_cap, lanczos_ritz
from landscape.errors import SpecError
from landscape.specs import AnalysisSpec, DataSpec
from tests.api.test_api import tiny_settings


def test_expected_products_are_below_the_cap_and_never_above_it() -> None:
    assert arpack_expected(10) == arpack_cap(10, ARPACK_EXPECTED_RESTARTS) == 52
    assert arpack_products(10) == 241
    for restarts in (1, 2, 10):  # maxiter is at least 1: the expected count never exceeds a cap
        assert arpack_expected(10) <= arpack_products(10, restarts)
    assert arpack_expected(0) == 0


def test_top_ten_of_a_trained_digits_net_converge_within_the_expected_products() -> None:
    """A real run: an MLP fitted to 200 digits images, its top 10 by ARPACK as the analysis
    asks for them (``LanczosOptions()``), within the expected count, far below the cap."""
    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.data[:200] / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target[:200])
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(40):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    operator = HessianOperator(model, (x, y), device="cpu")
    lanczos_ritz(operator, 10, "LA", LanczosOptions())
    assert 0 < operator.matvecs <= arpack_expected(10) < arpack_products(10)


def _top_ten(tmp_path: Path) -> AnalysisSpec:
    return AnalysisSpec(
        checkpoint=str(tmp_path / "net.pt"),
        data=DataSpec(name="digits", train_size=200),
        top=10,
        bottom=0,
    )


def test_the_time_counts_the_expected_products_and_the_budget_the_cap(tmp_path: Path) -> None:
    spec = _top_ten(tmp_path)
    shape = data_shape(spec.data)
    net = net_cost("mlp-plain", {}, shape)
    estimate = hessian_estimate(spec, 0, net, shape)
    assert estimate.flops / estimate.time_flops == pytest.approx(241 / 52)
    fixed = AnalysisSpec(
        checkpoint=spec.checkpoint,
        data=spec.data,
        top=0,
        bottom=1,
        trace_samples=10,
        density_probes=2,
    )
    other = hessian_estimate(fixed, 0, net, shape)
    assert other.time_flops == other.flops  # fixed steps, and the bottom end at its cap
    between = (estimate.time_flops + estimate.flops) / 2
    with pytest.raises(SpecError, match="FLOPs"):  # the budget is checked on the cap
        check_budget(estimate, tiny_settings(tmp_path, max_job_flops=between))
