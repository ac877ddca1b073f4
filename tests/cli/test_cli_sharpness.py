"""``landscape train --optimizer gd --sharpness-every`` and ``landscape sharpness``: the tracked
history and λmax along snapshots agree (Cohen et al. 2021's measurement)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_support import error_line

from landscape.cli import main

TANH_MLP = ["--model", "mlp-plain", "--model-arg", "depth=1", "--model-arg", "width=16",
            "--model-arg", "activation=tanh", "--dataset", "digits", "--device", "cpu",
            "--optimizer", "gd", "--schedule", "constant", "--weight-decay", "0",
            "--batch-size", "2048", "--loss", "mse_onehot"]  # fmt: skip


def test_gd_with_sharpness_tracking_writes_the_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gd.pt"
    argv = ["train", *TANH_MLP, "--train-size", "128", "--test-size", "32", "--steps", "6",
            "--lr", "0.5", "--sharpness-every", "3", "--snapshot-every", "2",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert "sharpness λmax" in capsys.readouterr().out
    meta = torch.load(out, weights_only=True)["metadata"]
    assert len(meta["history"]) == 6  # gd: one step per epoch
    tracked = meta["sharpness"]
    assert [r["step"] for r in tracked] == [0, 3, 6]
    assert all(r["lr"] == 0.5 and r["two_over_lr"] == 4.0 for r in tracked)
    assert all(r["lambda_max"] > 0 and r["loss"] > 0 for r in tracked)

    # the snapshots of the same run give the same λmax as the tracking (both at steps 0 and 6)
    snapshots = sorted((tmp_path / "gd.snapshots").glob("epoch_*.pt"))
    assert main(["sharpness", "--trajectory", *map(str, snapshots), "--json", "--quiet",
                 "--tol", "1e-6"]) == 0  # fmt: skip
    records = json.loads(capsys.readouterr().out)
    assert [r["step"] for r in records] == [0, 2, 4, 6]
    by_step = {r["step"]: r["lambda_max"] for r in records}
    for r in tracked:
        if r["step"] in by_step:
            assert by_step[r["step"]] == pytest.approx(r["lambda_max"], rel=1e-3)

    html = tmp_path / "history.html"
    assert main(["sharpness", "--history", str(out), "--html", str(html)]) == 0
    assert "2/η" in capsys.readouterr().out
    assert "plotly" in html.read_text()[:200_000].lower()


def test_history_of_an_untracked_checkpoint_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli_support import tiny_mlp_checkpoint

    checkpoint = tiny_mlp_checkpoint(tmp_path)
    assert main(["sharpness", "--history", str(checkpoint)]) == 2
    assert "--sharpness-every" in error_line(capsys)
    # options that only measure are refused beside a recorded history, not ignored
    assert main(["sharpness", "--history", str(checkpoint), "--loss", "mse"]) == 2
    assert "--loss set how snapshots are measured" in error_line(capsys)
    assert main(["train", *TANH_MLP, "--steps", "3", "--optimizer", "sgd",
                 "--out", str(tmp_path / "x.pt")]) == 2  # fmt: skip
    assert "--steps" in error_line(capsys)


@pytest.mark.slow
def test_gradient_descent_sharpens_to_the_edge_of_stability(tmp_path: Path) -> None:
    """Cohen et al. 2021 end to end, scaled down from docs/sharpness.md's command: a tanh MLP
    that starts flat (PyTorch's init) sharpens under full-batch GD until λmax reaches 2/η, and
    then stays there — a wrong step, a wrong loss or a wrong λmax would miss the band."""
    out = tmp_path / "eos.pt"
    argv = ["train", "--model", "mlp-plain", "--dataset", "digits", "--train-size", "512",
            "--model-arg", "depth=2", "--model-arg", "width=64", "--model-arg",
            "activation=tanh", "--model-arg", "init=torch", "--loss", "mse_onehot",
            "--optimizer", "gd", "--lr", "0.7", "--momentum", "0", "--weight-decay", "0",
            "--schedule", "constant", "--steps", "900", "--sharpness-every", "100",
            "--device", "cpu", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    tracked = torch.load(out, weights_only=True)["metadata"]["sharpness"]
    edge = 2 / 0.7
    assert tracked[0]["lambda_max"] < 0.5 * edge  # progressive sharpening starts from below
    last_third = [r["lambda_max"] for r in tracked if r["step"] >= 600]
    assert len(last_third) == 4
    assert all(abs(lam / edge - 1) <= 0.10 for lam in last_third), last_third
    assert tracked[-1]["loss"] < tracked[0]["loss"] / 5  # the loss keeps falling meanwhile
