"""``landscape interpolate``: the line between two checkpoints, its barrier before and after
alignment, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import error_line

from landscape.cli import main
from landscape.storage.interpolation import read_interpolation

TRAIN = ["train", "--model", "mlp-plain", "--model-arg", "depth=1", "--model-arg", "width=16",
         "--dataset", "digits", "--train-size", "256", "--test-size", "64", "--epochs", "2",
         "--device", "cpu"]  # fmt: skip
DATA = ["--train-size", "256", "--test-size", "64", "--device", "cpu", "--workers", "1"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("cli-interpolate")
    paths = (folder / "a.pt", folder / "b.pt")
    for seed, path in enumerate(paths):
        assert main([*TRAIN, "--seed", str(seed), "--out", str(path)]) == 0
    return paths


def test_interpolate_prints_the_line_and_its_barriers(
    pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "line.h5"
    argv = ["interpolate", str(pair[0]), str(pair[1]), "--out", str(out), "--points", "5",
            "--align", "weights", "--quiet", *DATA]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    result = read_interpolation(out)
    assert result.unaligned_barriers is not None
    loss = result.barriers["train_loss"]
    assert f"{result.unaligned_barriers['train_loss']:.4g} before alignment, {loss:.4g}" in text
    assert text.count("\n   ") >= 5  # a row per t

    assert main([*argv, "--json"]) == 0  # the same request: the file as it is
    shown = json.loads(capsys.readouterr().out)
    assert shown["barriers"] == pytest.approx(result.barriers)
    assert shown["t"] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert shown["settings"]["align"] == "weights"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--points", "4", "--range", "-0.3", "1"], "misses t = 0"),
        (["--bn", "train"], "unknown bn 'train'"),
        (["--splits", "val"], "unknown split 'val'"),
    ],
)
def test_bad_options_are_one_line(
    pair: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    expected: str,
) -> None:
    argv = ["interpolate", str(pair[0]), str(pair[1]), "--out", str(tmp_path / "x.h5"), *extra]
    assert main(argv) == 2
    assert expected in error_line(capsys)


def test_a_missing_checkpoint_is_named_as_typed(
    pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.pt"
    argv = ["interpolate", str(pair[0]), str(missing), "--out", str(tmp_path / "x.h5"), *DATA]
    assert main(argv) == 2
    assert str(missing) in error_line(capsys)
