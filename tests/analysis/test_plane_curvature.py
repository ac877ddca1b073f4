"""The plotted plane's curvature against the Hessian: the product figure is the dense Hessian's
quadratic form, the surface's second difference converges to it as O(h²), and the sentence
the CLI prints and the API sends carries the stored numbers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_support import tiny_mlp_checkpoint
from torch import nn
from torch.func import functional_call

from landscape import storage as store
from landscape.analysis import GROUP_NAME, HessianOperator
from landscape.analysis.plane_curvature import (
    MIN_EIGENVECTOR_PLANE,
    axis_curvatures,
    centre_index,
    plane_curvature,
    plane_sentence,
    plane_summary,
)
from landscape.cli import main
from landscape.data import load_data
from landscape.engine.point_evaluator import per_sample_loss
from landscape.sources.checkpoint import load_checkpoint
from landscape.specs import DataSpec, GridSpec, SurfaceSpec

F64 = {"dtype": torch.float64, "device": "cpu"}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models: intra-op threads only contend on a busy 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TanhNet(nn.Module):
    """Smooth (tanh), so the loss along a line is C⁴ and the difference's error is O(h²)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x.flatten(1))))


def _tiny() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    model = TanhNet().double().eval()
    return model, (torch.randn(41, 4, dtype=torch.float64), torch.randint(0, 3, (41,)))


def _directions(model: nn.Module, seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {k: torch.randn(p.shape, generator=g, dtype=torch.float64)
         for k, p in model.named_parameters()}
        for _ in range(2)
    ]  # fmt: skip


def _mean_loss(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], point: dict) -> float:  # type: ignore[type-arg]
    logits = functional_call(model, point, (data[0],))
    return float(per_sample_loss(logits, data[1], "cross_entropy").mean())


def _dense(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The Hessian of the mean loss over the flattened parameters, by autograd alone."""
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(flat: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat, sizes)
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        logits = functional_call(model, params, (data[0],))
        return per_sample_loss(logits, data[1], "cross_entropy").mean()

    hessian: torch.Tensor = torch.autograd.functional.hessian(loss, theta)
    return hessian


def test_axis_curvature_is_the_dense_quadratic_form() -> None:
    model, data = _tiny()
    dense = _dense(model, data).numpy()
    directions = _directions(model, seed=1)
    got, norms = axis_curvatures(HessianOperator(model, data, batch_size=9, **F64), directions)
    for value, norm, d in zip(got, norms, directions, strict=True):
        v = torch.cat([t.reshape(-1) for t in d.values()]).numpy()
        assert value == pytest.approx(v @ dense @ v / (v @ v), rel=1e-5)
        assert norm == pytest.approx(np.linalg.norm(v), rel=1e-12)
    # a parameter subset: the block of H over it, δ cut to it
    block = HessianOperator(model, data, params=["fc2.weight"], **F64)
    (sub,), _ = axis_curvatures(block, directions[:1])
    w = directions[0]["fc2.weight"].reshape(-1).numpy()
    start = sum(p.numel() for p in list(model.parameters())[:2])  # fc1.weight, fc1.bias
    h = dense[start : start + w.size, start : start + w.size]
    assert sub == pytest.approx(w @ h @ w / (w @ w), rel=1e-5)


def _surface(model: nn.Module, data: tuple, directions: list, r: float, n: int) -> store.Surface:  # type: ignore[type-arg]
    """A complete in-memory surface of the mean loss on an n×n grid over [-r, r]²."""
    spec = SurfaceSpec(
        checkpoint="c.pt", grid=GridSpec(x_range=(-r, r), n_x=n, y_range=(-r, r), n_y=n)
    )
    x, y = store.grid_coordinates(spec.grid)
    assert y is not None
    theta = dict(model.named_parameters())
    loss = np.empty((len(y), len(x)))
    with torch.no_grad():
        for j, yj in enumerate(y):
            for i, xi in enumerate(x):
                point = {k: p + xi * directions[0][k] + yj * directions[1][k]
                         for k, p in theta.items()}  # fmt: skip
                loss[j, i] = _mean_loss(model, data, point)
    return store.Surface(spec=spec, status="complete", x=x, y=y, values={"train_loss": loss})


def test_finite_difference_converges_to_the_product_as_h_squared() -> None:
    model, data = _tiny()
    directions = _directions(model, seed=2)
    operator = HessianOperator(model, data, **F64)
    errors = []
    for r in (0.02, 0.01):  # h = r on a 3×3 grid
        plane = plane_curvature(
            operator, directions, _surface(model, data, directions, r, 3),
            split="train", loss="cross_entropy",
        )  # fmt: skip
        np.testing.assert_allclose(plane.step, [r, r], rtol=1e-12)
        assert plane.metric == "train_loss" and plane.matvecs == 2
        errors.append(np.abs(plane.finite_difference - plane.hessian))
        np.testing.assert_allclose(plane.finite_difference, plane.hessian, rtol=1e-2)
    ratio = errors[0] / errors[1]  # O(h²): halving h quarters the error
    assert np.all((ratio > 3.0) & (ratio < 5.0)), ratio
    # no centre point (an even grid), or another loss than the surface's: no difference
    even = _surface(model, data, directions, 0.02, 4)
    plane = plane_curvature(operator, directions, even, split="train", loss="cross_entropy")
    assert np.isnan(plane.finite_difference).all() and np.isfinite(plane.hessian).all()
    other = plane_curvature(operator, directions, even, split="train", loss="mse")
    assert other.metric is None and np.isnan(other.step).all()


def test_centre_index() -> None:
    assert centre_index(np.linspace(-1, 1, 11)) == 5
    assert centre_index(np.linspace(-1, 1, 4)) is None
    assert centre_index(np.linspace(0, 1, 5)) is None  # the centre is an end: one side only
    assert centre_index(np.array([-1.0, 0.0])) is None


def test_sentence_names_the_numbers_and_the_cases() -> None:
    summary = {
        "axes": ["x", "y"], "hessian": [0.8, 0.75], "directions": "random",
        "mean_curvature": 0.7, "lambda_min": -3.1, "lambda_max": 12.0,
    }  # fmt: skip
    text = plane_sentence(summary)
    for part in ("0.8 along x", "0.75 along y", "tr(H)/n = 0.7", "λmin = −3.1", "λmax = 12"):
        assert part in text
    assert MIN_EIGENVECTOR_PLANE in text and text.endswith(".")
    convex = plane_sentence({**summary, "lambda_min": 0.02})
    assert "λmin = 0.02" in convex and "not negative" in convex and "--hessian-ends" not in convex
    own = plane_sentence({**summary, "directions": "hessian"})  # perhaps the min plane itself
    assert "against the mean curvature tr(H)/n = 0.7" in own and "random" not in own
    assert "λmin = −3.1 and λmax = 12." in own
    bare = plane_sentence({**summary, "mean_curvature": None, "lambda_min": None})
    assert "--trace" in bare and "--bottom 1" in bare


def test_cli_stores_prints_and_says_the_stored_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = tiny_mlp_checkpoint(tmp_path)
    out = tmp_path / "s.h5"
    fast = ["--train-size", "64", "--device", "cpu", "--quiet"]
    surface = ["surface", "--checkpoint", str(checkpoint), "--grid", "3", "--range", "-0.05",
               "0.05", "--workers", "1", "--no-compile"]  # fmt: skip
    assert main([*surface, *fast, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["hessian", "--surface", str(out), "--top", "1", "--bottom", "1", "--trace",
                 "--trace-samples", "4", "--steps", "6", *fast[2:]]) == 0  # fmt: skip
    text = capsys.readouterr().out
    group = store.read_group(out, GROUP_NAME)
    assert group is not None
    summary = plane_summary(*group)
    assert summary is not None
    assert "plane curvature x" in text and "plane curvature y" in text
    assert summary["sentence"] in text

    # the stored product figures: one product each on the analysis's data, float32
    model, _ = load_checkpoint(checkpoint)
    data = load_data(DataSpec(train_size=64), "train")
    direct, _ = axis_curvatures(
        HessianOperator(model, data, device="cpu"), store.read_directions(out)
    )
    np.testing.assert_allclose(summary["hessian"], direct, rtol=1e-4)
    assert summary["step"] == pytest.approx([0.05, 0.05])
    arrays, attrs = group
    assert summary["mean_curvature"] == pytest.approx(attrs["trace"] / attrs["n_params"])
    assert summary["lambda_min"] == arrays["bottom_eigenvalues"][0]
    # the sentence's numbers are the stored ones, as printed (3 significant figures)
    numbers = [float(s.replace("−", "-")) for s in re.findall(r"−?\d+\.?\d*(?:e[+-]?\d+)?",
                                                                  summary["sentence"])]  # fmt: skip
    for value in (*summary["hessian"], summary["mean_curvature"], summary["lambda_min"]):
        assert float(f"{value:.3g}") in numbers
