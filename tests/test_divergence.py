"""A run whose loss goes to NaN stops and says where and what to change; a surface that is NaN
at θ or everywhere is refused as a landscape, while a few overflowing points far out are kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

from landscape import storage as store
from landscape.cli import main
from landscape.divergence import check_surface
from landscape.errors import DivergedError
from landscape.models import build
from landscape.sources.checkpoint import save_checkpoint
from landscape.specs import DataSpec, DirectionSpec, EngineOptions, GridSpec, SurfaceSpec, TrainSpec
from landscape.surface import compute_surface
from landscape.train import partial_path, train_model
from tests.cli_support import MODEL_ARGS, tiny_mlp_checkpoint

DATA = DataSpec(name="digits", train_size=64, test_size=32)
TINY_MLP = {"depth": 1, "width": 8}
FAST = EngineOptions(device="cpu", workers=1, compile=False)


def _spec(**overrides: Any) -> TrainSpec:
    values: dict[str, Any] = {
        "model": "mlp-plain", "data": DATA, "epochs": 1, "batch_size": 16, "device": "cpu",
        "model_args": TINY_MLP,
    }  # fmt: skip
    return TrainSpec(**{**values, **overrides})


def test_a_diverging_training_stops_naming_the_epoch_loss_and_fix(tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    with pytest.raises(DivergedError) as info:
        train_model(_spec(lr=1e6, epochs=2), out)
    message = str(info.value)
    assert "diverged in epoch 1 of 2" in message and "loss is nan" in message
    assert "lower the learning rate (now 1e+06)" in message and "\n" not in message
    assert not out.exists() and not partial_path(out).exists()
    assert np.isfinite(train_model(_spec(lr=0.1, epochs=2), out)["train_loss"])  # the fix works


def test_the_cli_prints_the_divergence_as_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--model", "mlp-plain", "--dataset", "digits", "--train-size", "64",
            "--test-size", "32", "--epochs", "1", "--device", "cpu", "--lr", "1e6",
            "--out", str(tmp_path / "m.pt")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    line = lines[-1]  # after the progress bar's own line, if one was drawn
    assert "Traceback" not in err and [x for x in lines if x.startswith("error: ")] == [line]
    assert "training diverged in epoch 1" in line and "lower the learning rate" in line


def _surface_spec(checkpoint: Path) -> SurfaceSpec:
    return SurfaceSpec(
        checkpoint=str(checkpoint),
        data=DataSpec(name="digits", train_size=50),
        grid=GridSpec(n_x=5, n_y=3, x_range=(-1, 1), y_range=(-1, 1)),
        directions=DirectionSpec(seed=0),
    )


def test_a_nan_checkpoint_surface_is_refused_and_left_partial(tmp_path: Path) -> None:
    model = build("mlp-plain", **MODEL_ARGS)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    bad = save_checkpoint(
        tmp_path / "nan.pt", model, model_name="mlp-plain", model_args=MODEL_ARGS, metadata={}
    )
    spec, out = _surface_spec(bad), tmp_path / "nan.h5"
    message = r"train_loss is nan at every point: the model has diverged.*lower the learning"
    with pytest.raises(DivergedError, match=message):
        compute_surface(spec, out, options=FAST, refuse_diverged=True)
    surface = store.read_surface(out)
    assert surface.status == "partial" and surface.done == surface.total
    with pytest.raises(DivergedError, match=message):  # finishing it again says the same
        compute_surface(spec, out, options=FAST, refuse_diverged=True)


def test_overflow_away_from_the_centre_is_kept_but_a_nan_centre_is_not(tmp_path: Path) -> None:
    checkpoint = tiny_mlp_checkpoint(tmp_path)
    out = compute_surface(_surface_spec(checkpoint), tmp_path / "s.h5", options=FAST)
    check_surface(store.read_surface(out))  # a healthy surface passes
    with h5py.File(out, "r+") as f:
        f["train_loss"][0, :2] = [np.nan, np.inf]  # a corner overflowed
    check_surface(store.read_surface(out))
    with h5py.File(out, "r+") as f:
        f["train_loss"][1, 2] = np.nan  # (x, y) = (0, 0): the checkpoint itself
    with pytest.raises(DivergedError, match="at the checkpoint's own weights"):
        check_surface(store.read_surface(out))
