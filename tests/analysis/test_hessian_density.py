"""The eigenvalue density (SLQ) and fixed-step curvature maps in a surface's Hessian analysis:
``analyze`` stores them in the ``hessian/`` group and reads them back, checked against a dense
eigendecomposition of a tiny float64 model (``test_hessian._dense_hessian``, no Lanczos)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_support import error_line

from landscape import storage as store
from landscape.analysis import (
    GROUP_NAME,
    analysis_steps,
    analyze,
    density_from_group,
    group_contents,
    group_summary,
)
from landscape.cli import main
from landscape.data import load_data
from landscape.errors import SpecError, SurfaceFileError
from landscape.models import build
from landscape.sources.checkpoint import load_checkpoint, save_checkpoint
from landscape.specs import AnalysisSpec, DataSpec
from tests.analysis.test_hessian import _dense_hessian

# 64·2+2 + 2·(2·2+2) + 2·10+10 = 172 parameters: a dense Hessian is cheap, and 172 Lanczos steps
# span the whole Krylov space, so every SLQ node is an eigenvalue.
MODEL_ARGS = {"in_channels": 1, "num_classes": 10, "image_size": 8, "depth": 1, "width": 2}
N_PARAMS = 172
DATA = DataSpec(train_size=48)
CPU = ["--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def surface(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A checkpoint and its complete 3×3 surface on 48 digits."""
    folder = tmp_path_factory.mktemp("density")
    torch.manual_seed(0)
    ckpt = save_checkpoint(
        folder / "mlp.pt", build("mlp-plain", **MODEL_ARGS), model_name="mlp-plain",
        model_args=MODEL_ARGS, metadata={},
    )  # fmt: skip
    out = folder / "s.h5"
    assert main(["surface", "--checkpoint", str(ckpt), "--grid", "3", "--out", str(out),
                 "--train-size", "48", "--workers", "1", "--no-compile", *CPU]) == 0  # fmt: skip
    return ckpt, out


def _dense_eigenvalues(ckpt: Path) -> tuple[np.ndarray, np.ndarray]:
    model, _ = load_checkpoint(ckpt)
    x, y = load_data(DATA, "train")
    dense = _dense_hessian(model.double(), (x.double(), y), "cross_entropy")
    return np.linalg.eigvalsh(dense), dense


def test_analyze_stores_a_density_whose_nodes_are_the_dense_spectrum(
    surface: tuple[Path, Path],
) -> None:
    ckpt, out = surface
    spec = AnalysisSpec(
        checkpoint=str(ckpt), data=DATA, top=1, bottom=0, density_probes=3,
        density_steps=N_PARAMS, curvature_grid=2, curvature_steps=4, seed=5,
        device="cpu", dtype="float64",
    )  # fmt: skip
    seen: list[tuple[int, int]] = []
    arrays, _ = analyze(spec, out, on_progress=lambda done, total: seen.append((done, total)))
    plane = store.read_surface(out)
    total = analysis_steps(spec, plane.x, plane.y)
    assert total == 1 + 1 + 4 and seen[0] == (0, total) and seen[-1] == (total, total)

    group = store.read_group(out, GROUP_NAME)
    assert group is not None
    density = density_from_group(*group)
    assert density is not None
    np.testing.assert_array_equal(density.nodes, arrays["density_nodes"])
    np.testing.assert_array_equal(density.density, arrays["density"])
    assert density.nodes.shape == (3, N_PARAMS) and density.grid.shape == density.density.shape
    stored = group[1]
    assert stored["density_probes"] == 3 and stored["density_steps"] == N_PARAMS
    assert stored["density_seed"] == 5 and stored["density_probe"] == "rademacher"
    assert stored["density_matvecs"] > 0 and stored["density_sigma"] > 0
    assert stored["encoding-version"] == "1"

    exact, dense = _dense_eigenvalues(ckpt)
    scale = np.abs(exact).max()
    nodes = density.nodes[np.isfinite(density.nodes)]
    # Ritz values interlace: every node lies in [λ_min, λ_max]; a full Krylov space reaches both
    assert exact[0] - 1e-8 * scale <= nodes.min() and nodes.max() <= exact[-1] + 1e-8 * scale
    assert density.top == pytest.approx(exact[-1], rel=1e-6)
    assert density.bottom == pytest.approx(exact[0], abs=1e-6 * scale)
    # Gauss quadrature is exact for low-degree polynomials: the moments are each probe's
    # vᵀHᵏv / n for the seeded Rademacher probes, through the dense H
    rng = np.random.default_rng(5)
    probes = [rng.integers(0, 2, size=N_PARAMS).astype(np.float64) * 2 - 1 for _ in range(3)]
    for k in (1, 2):
        quadratic = np.mean([v @ np.linalg.matrix_power(dense, k) @ v for v in probes])
        assert density.moment(k) == pytest.approx(quadratic / N_PARAMS, rel=1e-6)
    assert np.trapezoid(density.density, density.grid) == pytest.approx(1.0, abs=1e-3)

    summary = group_summary(*group)
    shown = summary["density"]
    assert shown["node_min"] == density.bottom and shown["node_max"] == density.top
    negative = density.negative_mass
    assert negative is not None and shown["negative_fraction"] == pytest.approx(negative.fraction)
    assert 0.0 <= shown["negative_fraction"] <= 1.0 and len(shown["grid"]) == len(shown["density"])
    assert not any(key.startswith("density_") for key in summary)
    json.dumps(summary, allow_nan=False)  # JSON-ready: NaN padding became None
    cmap = summary["curvature_map"]
    assert cmap["steps"] == 4 and stored["curvature_steps"] == 4
    residuals = np.array(cmap["residual_max"], dtype=float)
    assert residuals.shape == (2, 2) and (residuals >= 0).all()


def test_a_group_without_density_reads_as_before() -> None:
    arrays, attrs = group_contents(None, None, {"split": "train"})
    assert density_from_group(arrays, attrs) is None
    summary = group_summary(arrays, attrs)
    assert "density" not in summary and summary["top_eigenvalues"] == []
    with pytest.raises(SurfaceFileError, match="density_nodes"):
        density_from_group({"density": np.ones(3)}, attrs)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"density_probes": -1}, "density_probes must be >= 0"),
        ({"density_probes": 101}, "density_probes must be at most 100"),
        ({"density_probes": 2, "density_steps": 1}, "density_steps must be 2..200"),
        ({"curvature_grid": 2, "curvature_steps": 201}, "curvature_steps must be 2..200"),
        ({"curvature_steps": 5}, "ask for a map"),
        ({"top": 0, "bottom": 0}, "density_probes"),
    ],
)
def test_bad_density_settings(changes: dict[str, int], words: str) -> None:
    with pytest.raises(SpecError, match=words):
        AnalysisSpec(checkpoint="c.pt", **changes)  # type: ignore[arg-type]


def test_cli_density_flags(surface: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, out = surface
    capsys.readouterr()
    args = ["hessian", "--surface", str(out), "--top", "1", "--bottom", "0",
            "--density-probes", "2", "--density-steps", "12", "--curvature-grid", "2",
            "--curvature-steps", "3", *CPU]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    (line,) = [row for row in text.splitlines() if "eigenvalue density" in row]
    assert "negative mass" in line and "2 probes × 12 steps, seed 0" in line
    assert "3 steps a point" in text
    group = store.read_group(out, GROUP_NAME)
    assert group is not None and group[0]["density_nodes"].shape == (2, 12)

    # Only a density, from a checkpoint alone; --json carries it with the recorded settings
    assert main(["hessian", "--checkpoint", str(ckpt), "--train-size", "48", "--top", "0",
                 "--bottom", "0", "--density-probes", "2", "--json", *CPU]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert summary["top_eigenvalues"] == [] and summary["density"]["probes"] == 2
    assert summary["density"]["steps"] == 40 and len(summary["density"]["nodes"]) == 2
    assert summary["density"]["node_min"] <= summary["density"]["node_max"]

    base = ["hessian", "--checkpoint", str(ckpt)]
    for extra, words in (
        (["--density-probes", "-2"], "density_probes must be >= 0, got -2"),
        (["--density-probes", "2", "--density-steps", "1"], "density_steps must be 2..200"),
        (["--surface", str(out), "--curvature-grid", "2", "--curvature-steps", "0"],
         "curvature_steps must be 2..200"),
        (["--curvature-steps", "5"], "ask for a map"),
    ):  # fmt: skip
        assert main([*base, *extra]) == 2, extra
        assert words in error_line(capsys)
