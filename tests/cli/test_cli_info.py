"""``landscape info`` shows each metric once and the stored gradient flow."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from cli_support import tiny_mlp_checkpoint

from landscape.cli import main
from landscape.cli.info_cmd import distinct_metrics


def test_info_lists_each_metric_once_and_the_gradient_flow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, out = tiny_mlp_checkpoint(tmp_path), tmp_path / "s.h5"
    common = ["--train-size", "40", "--quiet"]
    assert main(["surface", "--checkpoint", str(checkpoint), "--out", str(out), "--grid", "3",
                 *common]) == 0  # fmt: skip
    assert main(["gradient-flow", "--surface", str(out), *common]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    metrics = [line.split()[0] for line in text.split("  metrics\n")[1].splitlines()
               if line.startswith("    ") and not line.startswith("    layer")]  # fmt: skip
    assert "train_loss_sharpness" in metrics and "sharpness" not in metrics
    assert "sharpness_radius" in metrics  # not an alias: shown
    assert "gradient flow (40 samples)" in text
    assert "head.weight" in text and "input/output gradient ratio: init" in text


def test_an_alias_with_another_value_is_kept() -> None:
    stats = {"sharpness": 2.0, "train_loss_sharpness": 1.0, "roughness": math.nan,
             "train_loss_roughness": math.nan}  # fmt: skip
    shown = distinct_metrics(stats)
    assert sorted(shown) == ["sharpness", "train_loss_roughness", "train_loss_sharpness"]
