"""Losses (``landscape.losses``): built-in formulas, a callable's identity, and surfaces with a
custom loss -- from Python, the CLI's ``--loss-factory`` and a plugin -- against the naive
per-point loop; the loss in the cache key and the resume check; training with a loss."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.cli import main
from landscape.data import load_data
from landscape.engine.reference import reference_evaluate
from landscape.errors import SpecError, SurfaceFileError, UnknownNameError
from landscape.losses import Loss, LossFn, custom_loss, get_loss, list_losses, resolve_loss
from landscape.sources.checkpoint import load_checkpoint
from landscape.specs import DirectionSpec, EngineOptions, GridSpec, SurfaceSpec
from landscape.storage import read_directions, read_surface, surface_key
from landscape.surface import compute_module_surface

GRID = GridSpec(x_range=(-1.0, 1.0), n_x=4, y_range=(-0.5, 1.0), n_y=3)


def bn_mlp() -> nn.Module:
    """Linear → BN → ReLU → Linear, BN with non-trivial statistics: a loss that sees the
    model must see these parameters, not BN folded into the linear layer."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        bn = model[1]
        assert isinstance(bn, nn.BatchNorm1d)
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
    return model.eval()


def tensors() -> dict[str, tuple[Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(37, 6, generator=generator)  # 37: the last batch is padded
    return {"train": (x, torch.randint(0, 3, (37,), generator=generator))}


def engine(points_per_call: int = 1) -> EngineOptions:
    return EngineOptions(
        device="cpu", workers=1, compile=False, batch_size=16, points_per_call=points_per_call
    )


def smoothed_l2(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
    """CE with label smoothing 0.2 + 0.01·‖θ‖²: per sample."""
    penalty = sum(p.pow(2).sum() for p in model.parameters())
    return F.cross_entropy(model(inputs), targets, reduction="none", label_smoothing=0.2) + (
        0.01 * penalty
    )


def naive(path: Path, model: nn.Module, data: Mapping[str, tuple[Tensor, Tensor]],
          loss: str | Loss | LossFn) -> dict[str, np.ndarray]:  # fmt: skip
    """The file's grid through the naive per-point loop, in the file's ``[j, i]`` layout."""
    surface = read_surface(path)
    assert surface.y is not None
    xs, ys = np.meshgrid(surface.x, surface.y)  # [j, i] at (x[i], y[j])
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1)
    ref = reference_evaluate(model, read_directions(path), coords, data, loss=loss, batch_size=7)
    return {k: v.reshape(xs.shape) for k, v in ref.items()}


def assert_matches_naive(path: Path, model: nn.Module, data: Any, loss: Any) -> None:
    surface = read_surface(path)
    expected = naive(path, model, data, loss)
    for metric in ("train_loss", "train_acc"):
        np.testing.assert_allclose(surface.values[metric], expected[metric], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- built-ins


def test_builtin_losses_follow_their_formulas() -> None:
    generator = torch.Generator().manual_seed(2)
    logits, y = (
        torch.randn(9, 4, generator=generator),
        torch.randint(0, 4, (9,), generator=generator),
    )
    onehot = torch.eye(4)[y]

    def per(name: str) -> Tensor:
        of_logits = get_loss(name).of_logits
        assert of_logits is not None
        return of_logits(logits, y)

    log_p = logits.log_softmax(dim=1)
    torch.testing.assert_close(per("cross_entropy"), -log_p[torch.arange(9), y])
    torch.testing.assert_close(per("mse"), ((logits.softmax(1) - onehot) ** 2).mean(1))
    torch.testing.assert_close(per("mse_onehot"), ((logits - onehot) ** 2).sum(1) / 4)
    # Cohen et al.'s ½ Σ_c: C/2 times mse_onehot, so its Hessian (and sharpness) is too
    torch.testing.assert_close(per("cohen_square"), 0.5 * ((logits - onehot) ** 2).sum(1))
    q = 0.75 * onehot + 0.25 / 4
    torch.testing.assert_close(per("label_smoothing_0.25"), -(q * log_p).sum(1))
    listed = {loss.name: loss.source for loss in list_losses()}
    assert {"cross_entropy", "mse", "mse_onehot", "cohen_square", "label_smoothing_0.1"} <= set(
        listed
    )
    assert listed["cross_entropy_l2_0.0005"] == "builtin"


def test_loss_names_are_checked_and_canonical() -> None:
    with pytest.raises(UnknownNameError, match="mse_onehot"):
        get_loss("hinge")
    with pytest.raises(SpecError, match=r"'label_smoothing_0\.1'"):
        get_loss("label_smoothing_0.10")  # one loss, one name: one cache key
    with pytest.raises(SpecError, match="0 ≤ ε < 1"):
        get_loss("label_smoothing_1.0")
    with pytest.raises(SpecError, match="not given in this process"):
        get_loss("python:somewhere.else@0123456789ab")


def test_a_callables_identity_is_its_name_and_code() -> None:
    def make(scale: float) -> LossFn:
        def loss(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
            return scale * F.cross_entropy(model(inputs), targets, reduction="none")

        return loss

    first, again, other = custom_loss(make(1.0)), custom_loss(make(1.0)), custom_loss(make(2.0))
    assert first.name == again.name and first.name != other.name
    assert first.name.startswith("python:tests.test_losses.") or first.name.startswith(
        "python:test_losses."
    )
    assert custom_loss(make(2.0), name="scaled-ce-v1").name == "python:scaled-ce-v1"
    assert resolve_loss(first.name) is get_loss(first.name)  # remembered in this process


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("points_per_call", [1, 3])
def test_python_loss_surface_equals_naive_loop(tmp_path: Path, points_per_call: int) -> None:
    model, data = bn_mlp(), tensors()
    out = compute_module_surface(
        model, data, tmp_path / "s.h5", grid=GRID, loss=smoothed_l2, options=engine(points_per_call)
    )
    assert_matches_naive(out, model, data, smoothed_l2)
    surface = read_surface(out)
    assert surface.spec.loss == custom_loss(smoothed_l2).name
    assert surface.attrs["loss_source"] == "python"
    assert surface.attrs["loss_formula"].startswith("CE with label smoothing")
    engine_info = surface.attrs["engine"]
    assert engine_info["loss_sees_model"] and engine_info["bn_folded"] == 0
    assert engine_info["points_per_call"] == points_per_call and not engine_info["vmap_errors"]


def test_l2_loss_sees_each_grid_points_weights(tmp_path: Path) -> None:
    """cross_entropy_l2_λ − cross_entropy = (λ/2)‖θ + xδ + yη‖², computed from the stored
    directions independently of the engine."""
    model, data = bn_mlp(), tensors()
    l2 = compute_module_surface(model, data, tmp_path / "l2.h5", grid=GRID,
                                loss="cross_entropy_l2_0.1", options=engine(2))  # fmt: skip
    ce = compute_module_surface(model, data, tmp_path / "ce.h5", grid=GRID, options=engine())
    assert_matches_naive(l2, model, data, "cross_entropy_l2_0.1")
    surface, dirs = read_surface(l2), read_directions(l2)
    assert surface.y is not None
    theta = {n: p.detach().double() for n, p in model.named_parameters()}
    expected = np.empty((len(surface.y), len(surface.x)))
    for j, b in enumerate(surface.y):
        for i, a in enumerate(surface.x):
            expected[j, i] = 0.05 * sum(
                float((theta[n] + a * dirs[0][n].double() + b * dirs[1][n].double()).pow(2).sum())
                for n in theta
            )
    difference = surface.values["train_loss"] - read_surface(ce).values["train_loss"]
    np.testing.assert_allclose(difference, expected, rtol=1e-5)
    assert np.ptp(expected) > 0.01  # the penalty does change over the grid


def test_plugin_loss_surface_equals_naive_loop(tmp_path: Path) -> None:
    model, data = bn_mlp(), tensors()
    assert get_loss("toy-hinge-l1").source.startswith("plugin landscape-toy-plugin")
    out = compute_module_surface(
        model, data, tmp_path / "p.h5", grid=GRID, loss="toy-hinge-l1", options=engine(4)
    )
    assert_matches_naive(out, model, data, "toy-hinge-l1")
    assert read_surface(out).spec.loss == "toy-hinge-l1"


def python_scalar_branch(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
    """A loss with data-dependent Python: torch.vmap cannot run it."""
    per = F.cross_entropy(model(inputs), targets, reduction="none")
    return per * 2 if float(per.mean()) > 0.5 else per


def test_loss_that_cannot_be_vmapped_runs_per_point_and_says_so(tmp_path: Path) -> None:
    model, data = bn_mlp(), tensors()
    out = compute_module_surface(model, data, tmp_path / "v.h5", grid=GRID,
                                 loss=python_scalar_branch, options=engine(4))  # fmt: skip
    assert_matches_naive(out, model, data, python_scalar_branch)
    info = read_surface(out).attrs["engine"]
    assert info["points_per_call"] == 1 and info["vmap_errors"]
    assert "fails under torch.vmap" in info["points_per_call_reason"]


def test_a_mean_is_refused_with_the_reason(tmp_path: Path) -> None:
    def mean_ce(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(model(inputs), targets)

    with pytest.raises(
        SpecError, match=r"returned shape \(\) .*return per-sample losses, shape \(\d+,\)"
    ):
        compute_module_surface(bn_mlp(), tensors(), tmp_path / "m.h5", grid=GRID, loss=mean_ce,
                               options=engine())  # fmt: skip


# --------------------------------------------------------------------------- identity


def test_two_losses_are_two_surfaces_and_resume_refuses_another(tmp_path: Path) -> None:
    spec = SurfaceSpec(checkpoint="c.pt", grid=GRID, directions=DirectionSpec())
    keys = {surface_key(SurfaceSpec(**{**spec.__dict__, "loss": name}), "sha")
            for name in ("cross_entropy", "mse_onehot", custom_loss(smoothed_l2).name)}  # fmt: skip
    assert len(keys) == 3
    model, data = bn_mlp(), tensors()
    out = compute_module_surface(model, data, tmp_path / "s.h5", grid=GRID, loss="mse_onehot",
                                 options=engine())  # fmt: skip
    with pytest.raises(SurfaceFileError, match=r"computed with loss 'mse_onehot'.*mix two losses"):
        compute_module_surface(model, data, out, grid=GRID, loss=smoothed_l2, options=engine())


# --------------------------------------------------------------------------- CLI and training

LOSS_MODULE = '''
import torch.nn.functional as F


def focal(model, inputs, targets):
    """Focal loss, γ = 2 (Lin et al. 2017): −(1 − p_y)² log p_y."""
    log_p = F.log_softmax(model(inputs), dim=1).gather(1, targets[:, None]).squeeze(1)
    return -((1 - log_p.exp()) ** 2) * log_p


not_callable = 3
'''


@pytest.mark.slow
def test_cli_loss_factory_surface_equals_naive_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli_support import tiny_mlp_checkpoint

    (tmp_path / "my_losses.py").write_text(textwrap.dedent(LOSS_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    checkpoint, out = tiny_mlp_checkpoint(tmp_path), tmp_path / "focal.h5"
    common = ["surface", "--checkpoint", str(checkpoint), "--out", str(out), "--grid", "3",
              "--train-size", "64", "--device", "cpu", "--workers", "1", "--no-compile",
              "--quiet"]  # fmt: skip
    assert main([*common, "--loss-factory", "my_losses:focal"]) == 0
    surface = read_surface(out)
    assert surface.spec.loss.startswith("python:my_losses.focal@")
    model, _ = load_checkpoint(checkpoint)
    data = {"train": load_data(surface.spec.data, "train")}
    assert_matches_naive(out, model, data, custom_loss(_import("my_losses").focal))
    capsys.readouterr()
    assert main([*common, "--loss", "mse"]) == 2  # the same file, another loss
    assert "computed with loss 'python:my_losses.focal@" in capsys.readouterr().err


def _import(name: str) -> Any:
    import importlib

    return importlib.import_module(name)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("my_losses", "--loss-factory wants 'package.module:callable'"),
        ("no_such_module_here:fn", "--loss-factory 'no_such_module_here:fn': cannot import"),
        ("my_losses:nothing", "'my_losses' has no attribute 'nothing'"),
        ("my_losses:not_callable", "names a int, not a callable that returns per-sample losses"),
    ],
)
def test_cli_loss_factory_errors_read_like_model_factory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    factory: str, message: str,
) -> None:  # fmt: skip
    from cli_support import error_line

    (tmp_path / "my_losses.py").write_text(textwrap.dedent(LOSS_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    argv = ["surface", "--checkpoint", str(tmp_path / "absent.pt"), "--out",
            str(tmp_path / "s.h5"), "--loss-factory", factory]  # fmt: skip
    assert main(argv) == 2
    assert message in error_line(capsys)


def test_cli_train_with_mse_onehot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mlp.pt"
    argv = ["train", "--model", "mlp-plain", "--model-arg", "depth=1", "--model-arg", "width=8",
            "--epochs", "1", "--train-size", "128", "--test-size", "64", "--device", "cpu",
            "--loss", "mse_onehot", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    content = torch.load(out, weights_only=True)
    metadata = content["metadata"]
    assert metadata["train_spec"]["loss"] == "mse_onehot"
    # the recorded loss is the MSE of the trained model, recomputed here independently
    model, _ = load_checkpoint(out)
    x, y = load_data(metadata_data(metadata), "train")
    with torch.no_grad():
        expected = ((model.eval()(x) - torch.eye(10)[y]) ** 2).mean()
    assert metadata["train_loss"] == pytest.approx(float(expected), rel=1e-5)
    capsys.readouterr()


def metadata_data(metadata: dict[str, Any]) -> Any:
    from landscape.specs import DataSpec, from_dict

    return from_dict(DataSpec, metadata["train_spec"]["data"])
