"""Every Lanczos run of a Hessian analysis is bounded and cancellable.

ARPACK restarts until it converges unless told otherwise: a ``bottom`` eigenvalue next to the
bulk once took five times the products its estimate counted. Here each run is held to
``arpack_cap`` (the count the service's cost estimate uses) and ``should_stop`` is asked
before every product, on a small smooth MLP whose bottom eigenvalues are hard to separate.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from api.planning.cost import arpack_products
from landscape.analysis.hessian import (
    HessianOperator,
    LanczosOptions,
    arpack_cap,
    hessian_spectrum,
    krylov,
    lanczos_ritz,
)
from landscape.analysis.sharpness import SharpnessOptions, top_eigenpair
from landscape.analysis.spectral_density import spectral_density
from landscape.errors import CancelledError, SpecError


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _operator(**kwargs: object) -> HessianOperator:
    """A 4 → 40 → 3 tanh MLP (323 parameters) on 64 random points."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 40), nn.Tanh(), nn.Linear(40, 3)).double()
    data = (torch.randn(64, 4, dtype=torch.float64), torch.randint(0, 3, (64,)))
    return HessianOperator(model, data, device="cpu", dtype=torch.float64, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("k", "which", "restarts"),
    [(10, "SA", 1), (10, "SA", 3), (3, "LA", None), (2, "BE", 2), (1, "SA", 1)],
)
def test_no_arpack_run_spends_more_than_its_cap(k: int, which: str, restarts: int | None) -> None:
    operator = _operator()
    options = LanczosOptions(tol=1e-14, maxiter=restarts)
    cap = arpack_cap(k, restarts)
    try:
        values, residuals = lanczos_ritz(operator, k, which, options)  # type: ignore[arg-type]
    except SpecError as exc:
        assert f"{cap} Hessian products" in str(exc) and "maxiter" in str(exc)
        converged = False
    else:
        assert len(values) == len(residuals) == k
        converged = True
    assert 0 < operator.matvecs <= cap, (operator.matvecs, cap, converged)
    assert cap == arpack_products(k, restarts)  # what the service's estimate counts


def test_an_unconverged_bottom_run_stops_at_its_cap() -> None:
    """Ten eigenvalues at the bottom to 1e-14 in one restart cannot converge: the run ends
    with an error naming the cap, having spent no more than it (ARPACK's default would have
    restarted up to 10·n times)."""
    operator = _operator()
    with pytest.raises(SpecError, match="did not converge to the 10 smallest"):
        lanczos_ritz(operator, 10, "SA", LanczosOptions(tol=1e-14, maxiter=1))
    assert operator.matvecs <= arpack_cap(10, 1) == krylov(10) * 2 + 10


def test_a_converged_spectrum_is_within_the_estimate() -> None:
    operator = _operator()
    top, top_res = lanczos_ritz(operator, 3, "LA", LanczosOptions(tol=1e-8))
    assert operator.matvecs <= arpack_products(3)
    exact = np.linalg.eigvalsh(operator.dense())
    np.testing.assert_allclose(top, exact[-3:], rtol=1e-6)
    assert np.all(top_res < 1e-6 * abs(exact).max())


def _stop_after(products: int, operator_box: list[HessianOperator]) -> object:
    def should_stop() -> bool:
        return operator_box[0].matvecs >= products

    return should_stop


def test_cancel_stops_arpack_within_one_product() -> None:
    box: list[HessianOperator] = []
    operator = _operator(should_stop=_stop_after(7, box))
    box.append(operator)
    with pytest.raises(CancelledError, match="after 7 products"):
        lanczos_ritz(operator, 10, "SA", LanczosOptions(tol=1e-14))
    assert operator.matvecs == 7


def test_cancel_stops_the_trace_density_and_sharpness() -> None:
    """Hutchinson probes, SLQ and λmax runs go through the same operator: each stops at the
    product the flag turned at."""
    calls = {"n": 0}

    def after_five() -> bool:
        calls["n"] += 1
        return calls["n"] > 5

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 40), nn.Tanh(), nn.Linear(40, 3)).double()
    data = (torch.randn(64, 4, dtype=torch.float64), torch.randint(0, 3, (64,)))
    with pytest.raises(CancelledError):
        hessian_spectrum(
            model, data, top=0, trace_samples=1000, device="cpu", dtype=torch.float64,
            should_stop=after_five,
        )  # fmt: skip
    assert calls["n"] == 6
    calls["n"] = 0
    operator = _operator(should_stop=after_five)
    with pytest.raises(CancelledError):
        spectral_density(operator.matvec, operator.n, n_probes=50, steps=40)
    assert operator.matvecs == 5
    calls["n"] = 0
    operator = _operator(should_stop=after_five)
    with pytest.raises(CancelledError):
        top_eigenpair(operator, SharpnessOptions(tol=0.0))
    assert operator.matvecs == 5


def test_sharpness_stops_at_its_product_cap() -> None:
    options = SharpnessOptions(krylov=6, tol=0.0, maxiter=2)
    operator = _operator()
    with pytest.raises(SpecError, match="no λmax within"):
        top_eigenpair(operator, options)
    assert operator.matvecs <= options.product_cap == 6 * 3
