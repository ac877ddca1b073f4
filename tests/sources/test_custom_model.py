"""Your own model from Python: a hand-written module (not in the zoo), an untraceable one and an
MLP regression each give the naive per-point loop's numbers; the file resumes, is keyed by the
module and its weights, and ``--model-factory`` resolves user code with clear errors."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from landscape import storage as store
from landscape.data import load_dataset
from landscape.engine.evaluator import reference_evaluate
from landscape.errors import CancelledError, CheckpointError, SpecError, SurfaceFileError
from landscape.sources.factory import build_from_factory, load_factory
from landscape.sources.modules import (
    load_factory_checkpoint,
    model_key,
    module_description,
    weights_digest,
)
from landscape.specs import EngineOptions, GridSpec
from landscape.surface import compute_module_surface

CPU = EngineOptions(device="cpu", workers=1, compile=False)
GRID = GridSpec(x_range=(-1.0, 1.0), n_x=5, y_range=(-1.0, 1.0), n_y=4)


class ConvBNNet(nn.Module):
    """Hand-written: conv → BN → ReLU → conv → BN → pool → linear (not a zoo model)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.c2, self.b2 = nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.b1(self.c1(x)))
        h = F.relu(self.b2(self.c2(h)))
        return self.fc(h.mean(dim=(2, 3)))


class Gated(ConvBNNet):
    """Data-dependent control flow on the weights: torch.fx cannot trace it, vmap cannot
    batch it."""

    def forward(self, x: Tensor) -> Tensor:
        h = self.b1(self.c1(x))
        if h.abs().max() > 0:  # Python branch on a weight-dependent tensor
            h = F.relu(h)
        return self.fc(F.relu(self.b2(self.c2(h))).mean(dim=(2, 3)))


def digits() -> dict[str, tuple[Tensor, Tensor]]:
    return {
        "train": load_dataset("digits", "train", size=48),
        "test": load_dataset("digits", "test", size=24),
    }


def with_bn_statistics(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics, as after training."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    return model.eval()


def naive(
    path: Path, model: nn.Module, data: dict[str, tuple[Tensor, Tensor]]
) -> dict[str, np.ndarray]:
    surface = store.read_surface(path)
    flat = store.flat_coordinates(surface.x, surface.y, np.arange(surface.total))
    return reference_evaluate(copy.deepcopy(model), store.read_directions(path), flat, data)


def stored(path: Path) -> dict[str, np.ndarray]:
    return {k: v.reshape(-1) for k, v in store.read_surface(path).values.items()}


def test_hand_written_module_equals_the_naive_loop_with_bn_folded(tmp_path: Path) -> None:
    model, data = with_bn_statistics(ConvBNNet()), digits()
    out = compute_module_surface(model, data, tmp_path / "s.h5", grid=GRID, options=CPU)
    expected, got = naive(out, model, data), stored(out)
    for metric in ("train_loss", "train_acc", "test_loss", "test_acc"):
        np.testing.assert_allclose(got[metric], expected[metric], rtol=0, atol=1e-5)
    surface = store.read_surface(out)
    assert surface.status == "complete"
    assert surface.attrs["engine"]["bn_folded"] == 2
    assert surface.attrs["engine"]["fallbacks"] == []
    assert surface.attrs["model_source"] == "python" and surface.attrs["task"] == "classification"
    assert surface.attrs["checkpoint_sha256"] == model_key(model)
    assert surface.attrs["model_description_kind"] == "torch.fx"


def test_untraceable_module_falls_back_exactly_and_says_why(tmp_path: Path) -> None:
    model, data = with_bn_statistics(Gated()), digits()
    options = EngineOptions(device="cpu", workers=1, compile=False, points_per_call=3)
    out = compute_module_surface(model, data, tmp_path / "s.h5", grid=GRID, options=options)
    expected, got = naive(out, model, data), stored(out)
    for metric in expected:
        np.testing.assert_allclose(got[metric], expected[metric], rtol=0, atol=1e-5)
    engine = store.read_surface(out).attrs["engine"]
    assert engine["bn_folded"] == 0 and engine["points_per_call"] == 1
    reasons = " | ".join(engine["fallbacks"])
    assert "BN not folded: torch.fx cannot trace Gated" in reasons
    assert "torch.vmap cannot batch Gated" in reasons
    assert store.read_surface(out).attrs["model_description_kind"] == "source"


class Regressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def regression_data() -> dict[str, tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(70, 4, generator=g)
    y = torch.stack([torch.sin(x[:, 0]) + x[:, 1], x[:, 2] * x[:, 3]], dim=1)
    return {"train": (x[:50], y[:50]), "test": (x[50:], y[50:])}


def naive_regression(
    path: Path, model: nn.Module, data: dict[str, tuple[Tensor, Tensor]]
) -> dict[str, np.ndarray]:
    """Copy θ + Σ c d into a copy of the model, iterate a DataLoader; MSE and R²."""
    model = copy.deepcopy(model).eval()
    surface, dirs = store.read_surface(path), store.read_directions(path)
    flat = store.flat_coordinates(surface.x, surface.y, np.arange(surface.total))
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    out: dict[str, list[float]] = {f"{s}_{m}": [] for s in data for m in ("loss", "acc")}
    with torch.no_grad():
        for point in flat:
            for name, p in model.named_parameters():
                p.copy_(
                    theta[name] + sum(float(c) * d[name] for c, d in zip(point, dirs, strict=True))
                )
            for split, (x, y) in data.items():
                sse = 0.0
                for xb, yb in DataLoader(TensorDataset(x, y), batch_size=16):
                    sse += float(((model(xb) - yb) ** 2).double().sum())
                sst = float(((y - y.mean(dim=0)) ** 2).double().sum())
                out[f"{split}_loss"].append(sse / y.numel())
                out[f"{split}_acc"].append(1 - sse / sst)
    return {k: np.array(v) for k, v in out.items()}


def test_mlp_regression_equals_the_naive_loop(tmp_path: Path) -> None:
    model, data = Regressor(), regression_data()
    out = compute_module_surface(model, data, tmp_path / "r.h5", grid=GRID, options=CPU)
    expected, got = naive_regression(out, model, data), stored(out)
    for metric in expected:
        np.testing.assert_allclose(got[metric], expected[metric], rtol=1e-5, atol=1e-5)
    attrs = store.read_surface(out).attrs
    assert attrs["task"] == "regression" and "R²" in attrs["loss_definition"]
    assert any("regression head" in r for r in attrs["engine"]["fallbacks"])
    assert got["train_loss"].min() >= 0 and np.isfinite(got["train_acc"]).all()
    with pytest.raises(SpecError, match="need loss 'mse'"):
        compute_module_surface(model, data, tmp_path / "x.h5", loss="cross_entropy", options=CPU)


def test_interrupted_surface_resumes_to_the_same_values(tmp_path: Path) -> None:
    model, data = with_bn_statistics(ConvBNNet()), digits()
    full = compute_module_surface(model, data, tmp_path / "full.h5", grid=GRID, options=CPU)
    part = tmp_path / "part.h5"
    answers = iter([False])  # go on at the start, stop after the first chunk
    with pytest.raises(CancelledError):
        compute_module_surface(
            model, data, part, grid=GRID, options=CPU, should_stop=lambda: next(answers, True)
        )
    assert 0 < store.read_surface(part).done < GRID.n_points
    compute_module_surface(copy.deepcopy(model), data, part, grid=GRID, options=CPU)
    for metric, values in stored(full).items():
        np.testing.assert_array_equal(stored(part)[metric], values)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.b1.running_mean.add_(0.1)  # a buffer, not a parameter: still another model
    with pytest.raises(SurfaceFileError, match="checkpoint contents"):
        compute_module_surface(other, data, part, grid=GRID, options=CPU)


def test_identity_is_stable_and_sees_forward_weights_and_buffers() -> None:
    a = with_bn_statistics(ConvBNNet())
    assert module_description(a) == module_description(copy.deepcopy(a))
    assert model_key(a) == model_key(copy.deepcopy(a))
    assert " at 0x" not in module_description(a)
    gated = Gated()
    gated.load_state_dict(a.state_dict())
    assert weights_digest(gated) == weights_digest(a)  # same tensors …
    assert model_key(gated) != model_key(a)  # … another forward
    b = copy.deepcopy(a)
    with torch.no_grad():
        b.b2.running_var.mul_(1.01)
    assert weights_digest(b) != weights_digest(a)


FACTORY_SOURCE = textwrap.dedent(
    """
    from torch import nn

    NOT_CALLABLE = 3

    def make_net(*, in_channels, num_classes, image_size, hidden=16):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, hidden),
                             nn.ReLU(), nn.Linear(hidden, num_classes))

    def not_a_module(**kwargs):
        return "a string"

    class Nets:
        make = staticmethod(make_net)
    """
)


@pytest.fixture
def factory_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_factories_for_landscape.py").write_text(FACTORY_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_factories_for_landscape"


def test_model_factory_builds_and_loads_a_bare_state_dict(
    factory_module: str, tmp_path: Path
) -> None:
    spec = f"{factory_module}:Nets.make"
    args = {"in_channels": 1, "num_classes": 10, "image_size": 8, "hidden": 12}
    trained = build_from_factory(load_factory(spec), spec, **args)
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    model, meta = load_factory_checkpoint(tmp_path / "w.pt", spec, args)
    assert weights_digest(model) == weights_digest(trained)
    assert meta["model_factory"] == spec and meta["model_args"]["hidden"] == 12
    with pytest.raises(CheckpointError, match="does not fit the model of --model-factory"):
        load_factory_checkpoint(tmp_path / "w.pt", spec, {**args, "hidden": 13})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon_here", "wants 'package.module:callable'"),
        (":make_net", "wants 'package.module:callable'"),
        ("{mod}:", "wants 'package.module:callable'"),
        ("{mod}:a:b", "wants 'package.module:callable'"),
        ("no_such_module_for_landscape_tests:f", "cannot import module"),
        ("{mod}:missing", "has no attribute 'missing'"),
        ("{mod}:NOT_CALLABLE", "names a int, not a callable"),
    ],
)
def test_bad_factory_specs_are_clear_errors(factory_module: str, spec: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_factory(spec.format(mod=factory_module))


def test_factory_with_bad_arguments_or_result_is_a_clear_error(factory_module: str) -> None:
    with pytest.raises(SpecError, match="rejected its arguments"):
        build_from_factory(load_factory(f"{factory_module}:make_net"), "x", depth=3)
    with pytest.raises(SpecError, match=r"returned a str, not an nn\.Module"):
        build_from_factory(load_factory(f"{factory_module}:not_a_module"), "x")


@pytest.mark.gpu
def test_gpu_batches_a_custom_module_and_falls_back_for_an_untraceable_one(tmp_path: Path) -> None:
    data = digits()
    # strict fp32: the comparison is with the CPU's fp32 loop at atol 1e-5, which the TF32
    # default on CUDA (~3e-4 relative, docs/performance.md) would not meet
    gpu = EngineOptions(device="cuda", precision="fp32", compile=False)
    for cls, batched in ((ConvBNNet, True), (Gated, False)):
        model = with_bn_statistics(cls())
        out = compute_module_surface(
            model, data, tmp_path / f"{cls.__name__}.h5", grid=GRID, options=gpu
        )
        expected, got = naive(out, model, data), stored(out)
        for metric in expected:
            np.testing.assert_allclose(got[metric], expected[metric], rtol=0, atol=1e-5)
        engine = store.read_surface(out).attrs["engine"]
        assert engine["device"].startswith("cuda")
        assert (engine["points_per_call"] > 1) is batched, engine


@pytest.mark.slow
def test_hessian_of_a_hand_written_module_bounds_its_rayleigh_quotients() -> None:
    """The Hessian entry point takes module objects too (untraceable ones included): the top
    eigenvalue is at least the curvature vᵀHv/vᵀv along random directions."""
    from landscape.analysis.hessian import hessian_spectrum

    x, y = load_dataset("digits", "train", size=32)
    for model in (with_bn_statistics(ConvBNNet()), with_bn_statistics(Gated())):
        result = hessian_spectrum(model, (x, y), top=1, device="cpu")
        params = [p for p in model.parameters()]
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), params, create_graph=True)
        for _ in range(3):
            v = [torch.randn_like(p) for p in params]
            hv = torch.autograd.grad(grads, params, v, retain_graph=True)
            quotient = sum(float((a * b).sum()) for a, b in zip(v, hv, strict=True))
            quotient /= sum(float((a * a).sum()) for a in v)
            assert result.top[0] >= quotient - 1e-4
