"""The spectrum's spread over data: λ_max, λ_min and the trace on disjoint subsets, each checked
against a dense Hessian of that subset, the subsets re-derived here from the seeded permutation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_support import error_line

from landscape.analysis import analyze, group_summary
from landscape.cli import main
from landscape.data import SPLIT_SEED, load_data
from landscape.models import build
from landscape.sources.checkpoint import load_checkpoint, save_checkpoint
from landscape.specs import AnalysisSpec, DataSpec
from tests.analysis.test_hessian import _dense_hessian

MODEL_ARGS = {"in_channels": 1, "num_classes": 10, "image_size": 8, "depth": 1, "width": 2}
CPU = ["--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("spread") / "mlp.pt"
    return save_checkpoint(path, build("mlp-plain", **MODEL_ARGS), model_name="mlp-plain",
                           model_args=MODEL_ARGS, metadata={})  # fmt: skip


def test_spread_over_disjoint_subsets_matches_dense_hessians(checkpoint: Path) -> None:
    spec = AnalysisSpec(
        checkpoint=str(checkpoint), data=DataSpec(train_size=40), top=1, bottom=1,
        trace_samples=4, data_spread=3, spectrum_steps=172, seed=2, device="cpu", dtype="float64",
    )  # fmt: skip
    seen: list[tuple[int, int]] = []
    arrays, attrs = analyze(spec, on_progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (4, 4)  # the spectrum, then one step per subset
    spread = group_summary(arrays, attrs)["data_spread"]
    assert spread["size"] == 40 and spread["subsets"] == 3

    x, y = load_data(DataSpec(), "train")
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(SPLIT_SEED))
    model, _ = load_checkpoint(checkpoint)
    model = model.double()
    first_x, _ = load_data(DataSpec(train_size=40), "train")
    for k in range(3):
        keep = order[40 * k : 40 * (k + 1)].sort().values
        if k == 0:  # the first subset is the one analysed
            torch.testing.assert_close(x[keep], first_x)
        dense = _dense_hessian(model, (x[keep].double(), y[keep]), "cross_entropy")
        exact = np.linalg.eigvalsh(dense)
        rng = np.random.default_rng(2)
        probes = [rng.integers(0, 2, size=len(dense)) * 2.0 - 1 for _ in range(4)]
        trace = np.mean([z @ dense @ z for z in probes])
        assert spread["lambda_max"]["values"][k] == pytest.approx(exact[-1], rel=1e-6)
        assert spread["lambda_min"]["values"][k] == pytest.approx(exact[0], abs=1e-6 * exact[-1])
        assert spread["trace"]["values"][k] == pytest.approx(trace, rel=1e-6)
    values = np.array(spread["lambda_max"]["values"])
    assert spread["lambda_max"]["sd"] == pytest.approx(values.std(ddof=1))
    assert arrays["top_eigenvalues"][0] == pytest.approx(values[0], rel=1e-6)


def test_cli_data_spread(checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["hessian", "--checkpoint", str(checkpoint), "--top", "1", "--bottom", "0",
            "--steps", "10", *CPU]  # fmt: skip
    assert main([*base, "--samples", "30", "--data-spread", "2", "--trace",
                 "--trace-samples", "3"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "over 2 disjoint subsets of 30 samples" in text
    assert sum("over data" in line for line in text.splitlines()) == 2  # λ_max and the trace
    assert main([*base, "--samples", "30", "--data-spread", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["data_spread"]["lambda_max"]["values"]) == 2
    assert "trace" not in summary["data_spread"]
    for extra, words in (
        (["--samples", "0", "--data-spread", "2"], "--data-spread needs a subset size"),
        (["--data-spread", "1"], "data_spread must be 0 or 2..16"),
        (["--samples", "1000", "--data-spread", "3"], "need 3000 samples; the split has"),
    ):
        assert main([*base, *extra]) == 2, extra
        assert words in error_line(capsys)
