"""PCA directions of a trajectory that diverged: a one-line error naming the snapshots whose
weights are NaN or infinite, where the SVD used to fail with ``LinAlgError``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cli_support import MODEL_ARGS, error_line, tiny_mlp_checkpoint

from landscape.cli import main
from landscape.directions import model_parameters, pca_directions
from landscape.errors import DivergedError
from landscape.models import build
from landscape.sources.checkpoint import save_checkpoint


def _trajectory(folder: Path, bad: dict[int, float]) -> list[str]:
    """Four snapshots of the tiny MLP; snapshot ``i`` in ``bad`` gets that value in a weight."""
    paths = []
    for i in range(4):
        torch.manual_seed(i + 1)
        model = build("mlp-plain", **MODEL_ARGS)
        if i in bad:
            with torch.no_grad():
                next(p for p in model.parameters() if p.dim() > 1)[0, 0] = bad[i]
        path = folder / f"epoch_{i:03d}.pt"
        save_checkpoint(path, model, model_name="mlp-plain", model_args=MODEL_ARGS, metadata={})
        paths.append(str(path))
    return paths


def test_cli_surface_of_a_diverged_trajectory_names_its_snapshots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = tiny_mlp_checkpoint(tmp_path)
    trajectory = _trajectory(tmp_path, {2: float("nan"), 3: float("inf")})
    code = main([
        "surface", "--checkpoint", str(checkpoint), "--dataset", "digits", "--train-size", "50",
        "--directions", "pca", "--trajectory", *trajectory, "--grid", "3",
        "--out", str(tmp_path / "s.h5"),
    ])  # fmt: skip
    assert code == 2
    line = error_line(capsys)
    assert "2 of 4 trajectory snapshots hold non-finite weights" in line, line
    assert "epoch_002.pt, epoch_003.pt" in line and "diverged" in line
    assert "LinAlgError" not in line


def test_library_pca_refuses_a_non_finite_base_and_names_rows_without_labels() -> None:
    torch.manual_seed(0)
    params = model_parameters(build("mlp-plain", **MODEL_ARGS))
    weight = next(n for n, p in params.items() if p.dim() > 1)
    snaps = [{n: p + 0.1 * (i + 1) * torch.randn_like(p) for n, p in params.items()}
             for i in range(3)]  # fmt: skip
    snaps[1][weight] = snaps[1][weight].clone().fill_(float("nan"))
    with pytest.raises(DivergedError, match=r"1 of 3 .*\(#1\)"):
        pca_directions(params, snaps)
    broken = {**params, weight: params[weight].clone().fill_(float("inf"))}
    with pytest.raises(DivergedError, match="checkpoint's own weights are not finite"):
        pca_directions(broken, snaps[:1] * 3)
