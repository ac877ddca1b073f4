"""Surfaces along the top-2 Hessian eigenvectors, through the CLI: the values equal the naive
per-point loop, and the stored directions are the library's ``hessian_directions``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_support import tiny_mlp_checkpoint

from landscape import storage as store
from landscape.analysis.hessian import LanczosOptions
from landscape.analysis.hessian_directions import hessian_directions
from landscape.cli import main
from landscape.data import load_data
from landscape.engine.evaluator import reference_evaluate
from landscape.sources.checkpoint import load_checkpoint
from landscape.specs import DataSpec

FAST = ["--train-size", "64", "--workers", "1", "--no-compile", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_mlp_checkpoint(tmp_path_factory.mktemp("ckpt"))


def test_hessian_surface_through_the_cli(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "h.h5"
    args = ["surface", "--checkpoint", str(checkpoint), "--directions", "hessian", "--grid", "5"]
    assert main([*args, "--range", "-0.2", "0.2", "--seed", "4", *FAST, "--out", str(out)]) == 0
    assert "complete, 25/25 points" in capsys.readouterr().out
    surface = store.read_surface(out)
    stored = store.read_directions(out)

    model, _ = load_checkpoint(checkpoint)
    data = load_data(DataSpec(train_size=64), "train")
    expected, info = hessian_directions(
        model, data, 2, scale="weight", device="cpu", options=LanczosOptions(seed=4)
    )
    for got, want in zip(stored, expected, strict=True):
        for name in want:  # Lanczos to 1e-5: vectors agree to ~sqrt of that
            np.testing.assert_allclose(got[name].numpy(), want[name].numpy(), atol=2e-3)
    recorded = surface.attrs["directions_info"]
    assert recorded["kind"] == "hessian" and recorded["scale"] == "weight"
    assert recorded["eigenvalues"] == pytest.approx(info["eigenvalues"], rel=1e-3)
    assert recorded["eigenvalues"][0] >= recorded["eigenvalues"][1] > 0

    coords = store.flat_coordinates(surface.x, surface.y, np.arange(25))
    naive = reference_evaluate(model, stored, coords, {"train": data})
    np.testing.assert_allclose(
        surface.values["train_loss"], naive["train_loss"].reshape(5, 5), rtol=1e-5
    )


def test_bad_direction_kind_names_the_choices(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["surface", "--checkpoint", str(checkpoint), "--directions", "eigen", *FAST]
    assert main([*args, "--out", str(tmp_path / "x.h5")]) == 2
    assert "hessian" in capsys.readouterr().err
