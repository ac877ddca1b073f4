"""Hessian analysis against an independent dense Hessian of a tiny float64 model.

The reference is ``torch.autograd.functional.hessian`` of the full-data mean loss as a function
of the flattened parameters: no batching, no Hessian-vector products, no Lanczos.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_support import error_line
from torch import nn
from torch.func import functional_call

from landscape import storage as store
from landscape.analysis import (
    GROUP_NAME,
    HessianOperator,
    LanczosOptions,
    curvature_map,
    group_contents,
    hessian_spectrum,
)
from landscape.analysis.curvature import coarse_indices
from landscape.cli import main
from landscape.engine.point_evaluator import per_sample_loss
from landscape.errors import SpecError, SurfaceFileError
from landscape.models import build
from landscape.sources.checkpoint import save_checkpoint
from landscape.specs import GridSpec, SurfaceSpec

F64 = {"dtype": torch.float64, "device": "cpu"}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """These models are tiny: intra-op threads only contend (30× slower on a busy 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


EXACT = LanczosOptions(tol=1e-10)


class TinyBNNet(nn.Module):
    """Linear → BatchNorm → tanh → Linear: smooth (tanh), so H has no ReLU-kink zeros, and BN
    checks that running statistics, not batch statistics, are used."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 5)
        self.bn = nn.BatchNorm1d(5)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.bn(self.fc1(x.flatten(1)))))


def _tiny() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    model = TinyBNNet().double()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.weight.uniform_(0.5, 1.5)
    x = torch.randn(37, 1, 2, 2, dtype=torch.float64)
    y = torch.randint(0, 3, (37,))
    return model, (x, y)


def _dense_hessian(
    model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], loss: str
) -> np.ndarray:
    """H of the mean loss over all of ``data`` w.r.t. the flattened parameters, in eval mode."""
    model.eval()
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()]).double()
    buffers = dict(model.named_buffers())
    x, y = data

    def mean_loss(flat: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat, sizes)
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        logits = functional_call(model, {**params, **buffers}, (x,))
        return per_sample_loss(logits, y, loss).mean()  # type: ignore[arg-type]

    h = torch.autograd.functional.hessian(mean_loss, theta)
    return h.numpy()


@pytest.fixture(scope="module")
def tiny_dense() -> np.ndarray:
    model, data = _tiny()
    return _dense_hessian(model, data, "cross_entropy")


def test_hvp_equals_dense_product(tiny_dense: np.ndarray) -> None:
    model, data = _tiny()
    op = HessianOperator(model, data, batch_size=7, **F64)  # 37 = 5·7 + 2: uneven last batch
    assert op.n == tiny_dense.shape[0] == 53
    v = np.random.default_rng(1).standard_normal(op.n)
    np.testing.assert_allclose(op.matvec(v), tiny_dense @ v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_extreme_eigenvalues_match_eigvalsh(loss: str) -> None:
    model, data = _tiny()
    exact = np.linalg.eigvalsh(_dense_hessian(model, data, loss))
    result = hessian_spectrum(model, data, top=3, bottom=2, loss=loss, options=EXACT, **F64)  # type: ignore[arg-type]
    scale = np.abs(exact).max()
    np.testing.assert_allclose(result.top, exact[::-1][:3], atol=1e-9 * scale)
    np.testing.assert_allclose(result.bottom, exact[:2], atol=1e-9 * scale)
    assert result.n_params == 53 and result.n_samples == 37 and result.matvecs > 0
    assert result.ratio == pytest.approx(abs(exact[0] / exact[-1]), rel=1e-6)


def test_float32_products_close_to_float64(tiny_dense: np.ndarray) -> None:
    model, data = _tiny()
    result = hessian_spectrum(model.float(), data, top=1, bottom=0, device="cpu")
    exact = np.linalg.eigvalsh(tiny_dense)
    assert result.top[0] == pytest.approx(exact[-1], rel=1e-4)


def test_hutchinson_trace_close_to_exact(tiny_dense: np.ndarray) -> None:
    model, data = _tiny()
    result = hessian_spectrum(model, data, top=0, trace_samples=200, **F64)
    assert result.trace is not None and result.trace_stderr is not None
    # the estimator itself: the same seeded Rademacher probes through the dense H
    rng = np.random.default_rng(LanczosOptions().seed)
    probes = [rng.integers(0, 2, size=53).astype(np.float64) * 2 - 1 for _ in range(200)]
    assert result.trace == pytest.approx(np.mean([z @ tiny_dense @ z for z in probes]), rel=1e-10)
    # and its accuracy: unbiased, so within a few standard errors of the exact trace
    exact = float(np.trace(tiny_dense))
    assert abs(result.trace - exact) <= 4 * result.trace_stderr
    assert result.trace_stderr <= 0.1 * abs(exact)


def test_eval_mode_bn_and_model_untouched(tiny_dense: np.ndarray) -> None:
    model, data = _tiny()
    model.train()  # the analysis must use running statistics, whatever mode it is handed
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = hessian_spectrum(model, data, top=1, bottom=1, options=EXACT, **F64)
    exact = np.linalg.eigvalsh(tiny_dense)
    assert result.top[0] == pytest.approx(exact[-1], rel=1e-9)
    assert result.bottom[0] == pytest.approx(exact[0], rel=1e-9, abs=1e-12)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_tiny_model_uses_dense_fallback() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2)).double()  # n = 6 < 2k + 2
    data = (torch.randn(9, 2, dtype=torch.float64), torch.randint(0, 2, (9,)))
    exact = np.linalg.eigvalsh(_dense_hessian(model, data, "cross_entropy"))
    result = hessian_spectrum(model, data, top=3, bottom=3, **F64)
    np.testing.assert_allclose(result.top, exact[::-1][:3], atol=1e-12)
    np.testing.assert_allclose(result.bottom, exact[:3], atol=1e-12)


def _random_directions(model: nn.Module, seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {k: 0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64)
         for k, p in model.named_parameters()}
        for _ in range(2)
    ]  # fmt: skip


def _dense_spectrum_at(
    directions: list[dict[str, torch.Tensor]], xi: float, yj: float
) -> np.ndarray:
    """Eigenvalues of the dense Hessian of ``_tiny`` at ``θ + xδ + yη``."""
    moved, data = _tiny()
    with torch.no_grad():
        for name, p in moved.named_parameters():
            p.add_(xi * directions[0][name] + yj * directions[1][name])
    return np.linalg.eigvalsh(_dense_hessian(moved, data, "cross_entropy"))


def test_curvature_map_matches_dense_at_each_point() -> None:
    model, data = _tiny()
    directions = _random_directions(model, seed=3)
    x, y = np.linspace(-1, 1, 5), np.linspace(-0.5, 0.5, 3)
    cmap = curvature_map(model, data, directions, x, y, n=2, options=EXACT, **F64)
    assert cmap.lambda_max.shape == (2, 2)
    np.testing.assert_array_equal(cmap.x, [-1.0, 1.0])
    np.testing.assert_array_equal(cmap.y, [-0.5, 0.5])
    for j, yj in enumerate(cmap.y):
        for i, xi in enumerate(cmap.x):
            exact = _dense_spectrum_at(directions, xi, yj)
            assert cmap.lambda_max[j, i] == pytest.approx(exact[-1], rel=1e-8)
            assert cmap.lambda_min[j, i] == pytest.approx(exact[0], rel=1e-8, abs=1e-10)
    np.testing.assert_allclose(cmap.ratio, np.abs(cmap.lambda_min / cmap.lambda_max))


def test_fixed_step_curvature_map_brackets_the_dense_spectrum() -> None:
    """Fixed-step Lanczos: with as many steps as parameters it is exact; with few, each end is
    inside the spectrum (interlacing) and an eigenvalue lies within its residual norm."""
    model, data = _tiny()
    directions = _random_directions(model, seed=4)
    x = y = np.linspace(-1, 1, 3)
    n_params = sum(p.numel() for p in model.parameters())
    full = curvature_map(model, data, directions, x, y, n=3, steps=n_params, **F64)
    few = curvature_map(model, data, directions, x, y, n=3, steps=4, **F64)
    assert few.steps == 4 and few.matvecs == 9 * 4 and few.residual_min is not None
    assert full.residual_max is not None and few.residual_max is not None
    for j, yj in enumerate(full.y):
        for i, xi in enumerate(full.x):
            exact = _dense_spectrum_at(directions, xi, yj)
            assert full.lambda_max[j, i] == pytest.approx(exact[-1], rel=1e-8)
            assert full.lambda_min[j, i] == pytest.approx(exact[0], rel=1e-8, abs=1e-10)
            assert exact[0] - 1e-10 <= few.lambda_min[j, i] <= few.lambda_max[j, i]
            assert few.lambda_max[j, i] <= exact[-1] + 1e-10
            for value, residual in (
                (few.lambda_min[j, i], few.residual_min[j, i]),
                (few.lambda_max[j, i], few.residual_max[j, i]),
            ):
                assert np.abs(exact - value).min() <= residual + 1e-10
    with pytest.raises(SpecError, match="steps"):
        curvature_map(model, data, directions, x, y, n=2, steps=1, **F64)


def test_coarse_indices_and_bounds() -> None:
    np.testing.assert_array_equal(coarse_indices(51, 5), [0, 12, 25, 38, 50])
    np.testing.assert_array_equal(coarse_indices(3, 5), [0, 1, 2])
    np.testing.assert_array_equal(coarse_indices(51, 1), [25])
    model, data = _tiny()
    with pytest.raises(SpecError, match="curvature grid"):
        curvature_map(model, data, [{}], np.zeros(3), n=99)


def _surface_file(path: Path) -> Path:
    spec = SurfaceSpec(
        checkpoint="c.pt", grid=GridSpec(x_range=(-1, 1), n_x=4, y_range=(-1, 1), n_y=3)
    )
    x, y = store.grid_coordinates(spec.grid)
    directions = [{"w": torch.ones(2)}, {"w": torch.zeros(2)}]
    return store.create_surface_file(
        path, spec, x=x, y=y, directions=directions, provenance={"checkpoint_sha256": "ab" * 32}
    )


def test_group_round_trip(tmp_path: Path) -> None:
    path = _surface_file(tmp_path / "s.h5")
    model, data = _tiny()
    result = hessian_spectrum(model, data, top=2, bottom=1, trace_samples=3, **F64)
    arrays, attrs = group_contents(result, None, {"split": "train", "data": {"name": "digits"}})
    assert store.read_group(path, GROUP_NAME) is None
    store.write_group(path, GROUP_NAME, arrays, attrs)
    group = store.read_group(path, GROUP_NAME)
    assert group is not None
    got, got_attrs = group
    np.testing.assert_array_equal(got["top_eigenvalues"], result.top)
    np.testing.assert_array_equal(got["bottom_eigenvalues"], result.bottom)
    assert got_attrs["trace"] == result.trace and got_attrs["data"] == {"name": "digits"}
    assert got_attrs["encoding-type"] == "hessian-spectrum"
    assert got_attrs["settings"]["dtype"] == "float64"
    store.write_group(path, GROUP_NAME, {"top_eigenvalues": np.ones(1)}, attrs)  # replaces
    again = store.read_group(path, GROUP_NAME)
    assert again is not None and set(again[0]) == {"top_eigenvalues"}
    assert store.read_surface(path).values["train_loss"].shape == (3, 4)  # surface untouched
    for bad in ("x", "directions", "train_loss"):
        with pytest.raises(SurfaceFileError):
            store.write_group(path, bad, arrays, attrs)
    with pytest.raises(SurfaceFileError, match="encoding-type"):
        store.write_group(path, GROUP_NAME, arrays, {})


MODEL_ARGS = {"in_channels": 1, "num_classes": 10, "image_size": 8, "depth": 1, "width": 8}
FAST = ["--train-size", "48", "--device", "cpu", "--quiet"]


def test_cli_hessian_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    ckpt = save_checkpoint(
        tmp_path / "mlp.pt", build("mlp-plain", **MODEL_ARGS), model_name="mlp-plain",
        model_args=MODEL_ARGS, metadata={},
    )  # fmt: skip
    out = tmp_path / "s.h5"
    assert main(["surface", "--checkpoint", str(ckpt), "--grid", "3", "--out", str(out),
                 "--workers", "1", "--no-compile", *FAST]) == 0  # fmt: skip
    capsys.readouterr()

    args = ["hessian", "--surface", str(out), "--top", "2", "--bottom", "1", "--trace",
            "--trace-samples", "4", "--curvature-grid", "2", *FAST[2:]]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "λ_max #2" in text and "trace" in text and "curvature map 2×2" in text
    assert f"stored in {out}:hessian/" in text
    group = store.read_group(out, GROUP_NAME)
    assert group is not None
    arrays, attrs = group
    assert arrays["top_eigenvalues"].shape == (2,) and arrays["lambda_max"].shape == (2, 2)
    assert attrs["data"]["train_size"] == 48 and attrs["split"] == "train"  # the surface's data
    np.testing.assert_array_equal(arrays["curvature_x"], [-1.0, 1.0])

    assert main(["info", str(out)]) == 0
    assert "λ_max #1" in capsys.readouterr().out
    assert main(["hessian", "--checkpoint", str(ckpt), "--top", "1", "--bottom", "0",
                 "--json", *FAST]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["top_eigenvalues"]) == 1 and summary["n_samples"] == 48
    assert summary["top_eigenvalues"][0] == pytest.approx(arrays["top_eigenvalues"][0], rel=1e-3)


def test_cli_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    ckpt = save_checkpoint(
        tmp_path / "mlp.pt", build("mlp-plain", **MODEL_ARGS), model_name="mlp-plain",
        model_args=MODEL_ARGS, metadata={},
    )  # fmt: skip
    assert main(["hessian", "--checkpoint", str(ckpt), "--top", "-1"]) == 2
    assert "top must be >= 0, got -1" in error_line(capsys)
    assert main(["hessian", "--checkpoint", str(ckpt), "--curvature-grid", "3"]) == 2
    assert "needs --surface" in error_line(capsys)
    assert main(["hessian", "--checkpoint", str(ckpt), "--split", "val"]) == 2
    assert "unknown split 'val'" in error_line(capsys)
    surface = _surface_file(tmp_path / "s.h5")
    assert main(["hessian", "--checkpoint", str(ckpt), "--surface", str(surface)]) == 2
    assert "not the one surface" in error_line(capsys)


def test_operator_leaves_the_callers_model_as_it_is(tiny_dense: np.ndarray) -> None:
    """A float32 model in training mode, products asked for in float64: the operator works on
    an eval-mode copy; the caller's parameters keep their objects, device, dtype, values and
    its mode. A model already as asked (float64, eval, CPU) is used as it is, not copied."""
    model, data = _tiny()
    model = model.float().train()
    before = [(p, p.device, p.dtype, p.detach().clone()) for p in model.parameters()]
    op = HessianOperator(model, data, **F64)
    v = np.random.default_rng(2).standard_normal(op.n)
    np.testing.assert_allclose(op.matvec(v), tiny_dense @ v, rtol=1e-5, atol=1e-6)  # eval mode
    assert model.training and op.model is not model
    for p, (same, device, dtype, value) in zip(model.parameters(), before, strict=True):
        assert p is same and p.device == device and p.dtype == dtype and torch.equal(p, value)
    ready, _ = _tiny()
    assert HessianOperator(ready.eval(), data, **F64).model is ready
    result = hessian_spectrum(model, data, top=1, **F64)
    assert result.settings["precision"] == "fp32" and model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.gpu
def test_products_on_cuda_leave_the_model_on_the_cpu(tiny_dense: np.ndarray) -> None:
    model, data = _tiny()
    params = list(model.parameters())
    op = HessianOperator(model, data, device="cuda", dtype=torch.float64)
    v = np.random.default_rng(3).standard_normal(op.n)
    np.testing.assert_allclose(op.matvec(v), tiny_dense @ v, rtol=1e-8, atol=1e-10)
    assert op.device.type == "cuda" and op.precision == "fp32"
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))
    assert all(p.device.type == "cpu" for p in params)
