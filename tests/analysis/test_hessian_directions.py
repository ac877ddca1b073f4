"""Hessian eigenvector directions against the dense Hessian of a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from landscape.analysis.hessian import HessianOperator, LanczosOptions
from landscape.analysis.hessian_directions import hessian_directions
from landscape.errors import SpecError


def _tiny() -> tuple[nn.Module, tuple[Tensor, Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    g = torch.Generator().manual_seed(4)
    return model, (torch.randn(30, 4, generator=g), torch.randint(0, 3, (30,), generator=g))


def _flat(direction: dict[str, Tensor], model: nn.Module) -> np.ndarray:
    return torch.cat([direction[n].reshape(-1) for n, _ in model.named_parameters()]).numpy()


def test_top_two_eigenvectors_match_the_dense_hessian_up_to_sign() -> None:
    model, data = _tiny()
    dense = HessianOperator(model, data, device="cpu", dtype=torch.float64).dense()
    values, vectors = np.linalg.eigh(dense)
    assert values[-1] - values[-2] > 1e-3 * values[-1]  # distinct: the vectors are defined
    dirs, info = hessian_directions(model, data, 2, device="cpu", options=LanczosOptions(tol=1e-10))
    assert [set(d) for d in dirs] == [{n for n, _ in model.named_parameters()}] * 2
    assert all(t.dtype == torch.float32 for d in dirs for t in d.values())
    np.testing.assert_allclose(info["eigenvalues"], values[::-1][:2], rtol=1e-6)
    for j, column in enumerate((vectors[:, -1], vectors[:, -2])):
        got = _flat(dirs[j], model)
        assert abs(float(got @ column)) == pytest.approx(1.0, abs=1e-5)
        assert got[np.argmax(np.abs(got))] > 0  # the sign convention
    # x and y are orthogonal
    assert abs(float(_flat(dirs[0], model) @ _flat(dirs[1], model))) < 1e-5


def test_weight_scale_and_one_direction() -> None:
    model, data = _tiny()
    unit, _ = hessian_directions(model, data, 1, device="cpu")
    scaled, info = hessian_directions(model, data, 1, device="cpu", scale="weight")
    norm = float(torch.sqrt(sum((p.detach() ** 2).sum() for p in model.parameters())))
    assert info["scale_factor"] == pytest.approx(norm)
    assert len(unit) == len(scaled) == 1
    np.testing.assert_allclose(_flat(scaled[0], model), _flat(unit[0], model) * norm, rtol=1e-5)
    assert np.linalg.norm(_flat(unit[0], model)) == pytest.approx(1.0, abs=1e-5)


def test_bad_arguments() -> None:
    model, data = _tiny()
    with pytest.raises(SpecError, match="ndim"):
        hessian_directions(model, data, 3)
    with pytest.raises(SpecError, match="scale"):
        hessian_directions(model, data, scale="filter")  # type: ignore[arg-type]


def test_directions_are_on_the_cpu_and_the_model_is_not_moved() -> None:
    from landscape.directions import make_directions
    from landscape.specs import DirectionSpec

    model, data = _tiny()
    params = [(p, p.dtype) for p in model.parameters()]
    dirs, info = make_directions(model, DirectionSpec(kind="hessian"), 2, data=data, device="cpu")
    assert info["device"] == "cpu" and info["precision"] == "fp32"
    assert all(t.device.type == "cpu" for d in dirs for t in d.values())
    assert [(p, p.dtype) for p in model.parameters()] == params


@pytest.mark.gpu
def test_directions_computed_on_cuda_equal_the_cpu_ones() -> None:
    model, data = _tiny()
    exact = LanczosOptions(tol=1e-10)
    on_cpu, _ = hessian_directions(model, data, 2, device="cpu", options=exact)
    on_gpu, info = hessian_directions(model, data, 2, device="cuda", options=exact)
    assert info["device"].startswith("cuda") and info["precision"] == "fp32"
    assert all(p.device.type == "cpu" for p in model.parameters())
    for a, b in zip(on_cpu, on_gpu, strict=True):
        for name in a:
            assert b[name].device.type == "cpu" and b[name].dtype == torch.float32
            torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-5)
