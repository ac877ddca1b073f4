"""``landscape hessian --params``: the Hessian's block of a parameter subset, against the dense
Hessian of the loss as a function of those parameters alone, and the surface's subset as the
default of an analysis stored in a subset surface."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_support import error_line, tiny_mlp_checkpoint
from torch.func import functional_call

from landscape.cli import main
from landscape.data import load_data
from landscape.sources.checkpoint import load_checkpoint
from landscape.specs import DataSpec

SAMPLES = 48
FAST = ["--samples", str(SAMPLES), "--dtype", "float64", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_mlp_checkpoint(tmp_path_factory.mktemp("ckpt"))


def _head_block_eigenvalues(checkpoint: Path) -> np.ndarray:
    """Eigenvalues of the Hessian of the mean loss as a function of ``head.weight`` alone
    (every other parameter a constant), dense, by ``torch.autograd.functional.hessian``."""
    model, _ = load_checkpoint(str(checkpoint))
    model = model.double().eval()
    x, y = load_data(DataSpec(train_size=SAMPLES), "train")
    fixed = {n: p.detach() for n, p in model.named_parameters() if n != "head.weight"}
    buffers = dict(model.named_buffers())
    shape = model.get_parameter("head.weight").shape

    def mean_loss(flat: torch.Tensor) -> torch.Tensor:
        params = {**fixed, **buffers, "head.weight": flat.reshape(shape)}
        return F.cross_entropy(functional_call(model, params, (x.double(),)), y)

    start = model.get_parameter("head.weight").detach().reshape(-1)
    dense = torch.autograd.functional.hessian(mean_loss, start).numpy()
    return np.linalg.eigvalsh((dense + dense.T) / 2)


def test_hessian_of_a_subset_equals_its_dense_block(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the top end (ARPACK); the bottom of a linear head's block is a cluster at 0 (softmax's
    # null directions), which ARPACK resolves slowly
    args = ["hessian", "--checkpoint", str(checkpoint), "--top", "2", "--bottom", "0", *FAST]
    assert main([*args, "--steps", "0", "--params", "head.weight", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    exact = _head_block_eigenvalues(checkpoint)
    assert summary["n_params"] == exact.size == 80 and summary["params"] == ["head.weight"]
    scale = np.abs(exact).max()
    np.testing.assert_allclose(summary["top_eigenvalues"], exact[::-1][:2], atol=1e-7 * scale)
    assert main([*args, "--steps", "10", "--params", "head.weight"]) == 0
    assert "80 (head.weight; the rest held fixed)" in capsys.readouterr().out


def test_unmatched_pattern_is_one_line(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["hessian", "--checkpoint", str(checkpoint), "--top", "1", "--bottom", "0", *FAST]
    assert main([*args, "--params", "layer3.*"]) != 0
    line = error_line(capsys)
    assert "'layer3.*' matches no parameter" in line and "head.weight" in line


def test_a_subset_surface_gives_its_subset_to_the_analysis(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s.h5"
    surface = ["surface", "--checkpoint", str(checkpoint), "--grid", "3", "--train-size", "48",
               "--workers", "1", "--no-compile", "--device", "cpu", "--quiet"]  # fmt: skip
    assert main([*surface, "--params", "head.*", "--out", str(out)]) == 0
    capsys.readouterr()
    args = ["hessian", "--surface", str(out), "--top", "1", "--bottom", "0", "--steps", "8"]
    assert main([*args, "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["params"] == ["head.*"] and summary["n_params"] == 80 + 10
    assert main([*args, "--quiet", "--json", "--params", "*"]) == 0  # '*': every parameter
    summary = json.loads(capsys.readouterr().out)
    assert "params" not in summary and summary["n_params"] > 90
