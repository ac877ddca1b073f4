"""Hessian directions at both ends of the spectrum against a dense Hessian: the bottom
eigenvectors, one of each, and their eigenvalues stored with the surface (x first)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_support import error_line
from torch import Tensor, nn

from landscape import storage as store
from landscape.analysis.hessian import HessianOperator, LanczosOptions
from landscape.analysis.hessian_directions import hessian_directions
from landscape.cli import main
from landscape.data import load_data
from landscape.errors import SpecError, UnknownNameError
from landscape.models import build
from landscape.plot.figures import axis_titles
from landscape.plot.html import surface_data
from landscape.plot.scale import FIGURE_JS, short
from landscape.sources.checkpoint import load_checkpoint, save_checkpoint
from landscape.specs import DataSpec, DirectionSpec

MODEL_ARGS = {"in_channels": 1, "num_classes": 10, "image_size": 8, "depth": 1, "width": 2}


def _tiny() -> tuple[nn.Module, tuple[Tensor, Tensor]]:
    """43 parameters away from a minimum: negative eigenvalues, distinct at both ends."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    g = torch.Generator().manual_seed(4)
    return model, (torch.randn(30, 4, generator=g), torch.randint(0, 3, (30,), generator=g))


def _flat(direction: dict[str, Tensor], model: nn.Module) -> np.ndarray:
    return torch.cat([direction[n].reshape(-1) for n, _ in model.named_parameters()]).numpy()


@pytest.mark.parametrize(("ends", "columns"), [("min", [0, 1]), ("max,min", [-1, 0])])
def test_ends_match_the_dense_hessian_up_to_sign(ends: str, columns: list[int]) -> None:
    model, data = _tiny()
    dense = HessianOperator(model, data, device="cpu", dtype=torch.float64).dense()
    values, vectors = np.linalg.eigh(dense)
    assert values[0] < 0 and values[1] - values[0] > 1e-3 * abs(values[0])
    dirs, info = hessian_directions(
        model,
        data,
        2,
        device="cpu",
        options=LanczosOptions(tol=1e-10),
        ends=ends,  # type: ignore[arg-type]
    )
    assert info["ends"] == ends and info["converged"]
    np.testing.assert_allclose(info["eigenvalues"], values[columns], rtol=1e-6)
    for j, column in enumerate(columns):
        got = _flat(dirs[j], model)
        assert abs(float(got @ vectors[:, column])) == pytest.approx(1.0, abs=1e-5)
    assert abs(float(_flat(dirs[0], model) @ _flat(dirs[1], model))) < 1e-5


def test_bad_ends() -> None:
    model, data = _tiny()
    with pytest.raises(SpecError, match="'max,min' make two directions"):
        hessian_directions(model, data, 1, ends="max,min")
    with pytest.raises(UnknownNameError, match="hessian ends"):
        DirectionSpec(kind="hessian", hessian_ends="top")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="hessian_ends applies to directions of kind 'hessian'"):
        DirectionSpec(hessian_ends="min")


def _surface_args(tmp_path: Path) -> tuple[Path, list[str]]:
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "m.pt", build("mlp-plain", **MODEL_ARGS),
                           model_name="mlp-plain", model_args=MODEL_ARGS, metadata={})  # fmt: skip
    return ckpt, ["surface", "--checkpoint", str(ckpt), "--grid", "2", "--train-size", "40",
                  "--directions", "hessian", "--max-lanczos-steps", "172", "--workers", "1",
                  "--no-compile", "--device", "cpu", "--quiet"]  # fmt: skip


@pytest.mark.slow
def test_cli_surface_on_the_max_min_plane(tmp_path: Path) -> None:
    ckpt, base = _surface_args(tmp_path)
    out = tmp_path / "s.h5"
    assert main([*base, "--hessian-ends", "max,min", "--out", str(out)]) == 0
    info = store.read_surface(out).attrs["directions_info"]
    model, _ = load_checkpoint(ckpt)
    dense = HessianOperator(model.double(), load_data(DataSpec(train_size=40), "train"),
                            device="cpu", dtype=torch.float64).dense()  # fmt: skip
    exact = np.linalg.eigvalsh(dense)
    assert info["ends"] == "max,min"
    np.testing.assert_allclose(info["eigenvalues"], [exact[-1], exact[0]],
                               rtol=1e-3, atol=1e-4 * exact[-1])  # fmt: skip
    # the figures (landscape plot's and the page's figure.js) name each axis and its eigenvalue
    surface = store.read_surface(out)
    top, bottom = (short(v) for v in info["eigenvalues"])
    titles = [f"top eigenvector (λ = {top})", f"bottom eigenvector (λ = {bottom})"]
    assert list(axis_titles(surface)) == titles
    if shutil.which("node"):
        script = (
            "const f = await import(process.env.FIGURE_JS_URL);"
            "const s = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
            "process.stdout.write(JSON.stringify(f.axisTitles(s)));"
        ).replace("require('fs')", "(await import('node:fs'))")
        done = subprocess.run(
            ["node", "--input-type=module", "-e", script],
            input=json.dumps(surface_data(surface), allow_nan=False),
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "FIGURE_JS_URL": FIGURE_JS.as_uri()},
            check=True,
        )
        assert json.loads(done.stdout) == titles


def test_cli_rejects_bad_ends(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, base = _surface_args(tmp_path)
    for extra, words in (
        (["--hessian-ends", "top"], "hessian ends"),
        (["--hessian-ends", "max,min", "--dim", "1"], "'max,min' make two directions"),
    ):
        assert main([*base, *extra, "--out", str(tmp_path / "bad.h5")]) == 2, extra
        assert words in error_line(capsys)
