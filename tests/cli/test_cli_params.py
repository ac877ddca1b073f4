"""``landscape surface --params``: a parameter subset end to end, shown by ``info``, and the
one-line error of a pattern that matches nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import error_line, tiny_mlp_checkpoint

from landscape.cli import main
from landscape.storage import read_directions, read_surface

FAST = ["--train-size", "48", "--workers", "1", "--no-compile", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_mlp_checkpoint(tmp_path_factory.mktemp("ckpt"))


def test_params_surface_and_info(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "head.h5"
    args = ["surface", "--checkpoint", str(checkpoint), "--grid", "3", *FAST]
    assert main([*args, "--params", "head.*, blocks.0.fc2.*", "--out", str(out)]) == 0
    surface = read_surface(out)
    assert surface.spec.directions.params == ("head.*", "blocks.0.fc2.*")
    for direction in read_directions(out):
        moved = {name for name, d in direction.items() if bool(d.any())}
        assert moved == {"head.weight", "blocks.0.fc2.weight"}  # biases: ignore biasbn
    capsys.readouterr()

    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("params"))
    assert "head.*, blocks.0.fc2.*" in line and "4 tensors" in line and "the rest fixed" in line
    assert main(["info", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["provenance"]["directions"]["params"] == ["head.*", "blocks.0.fc2.*"]

    plain = tmp_path / "all.h5"
    assert main([*args, "--out", str(plain)]) == 0
    assert read_surface(plain).key != surface.key  # another subset, another surface
    capsys.readouterr()
    assert main(["info", str(plain)]) == 0
    assert "params      all" in capsys.readouterr().out


def test_unmatched_pattern_is_one_line(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "none.h5"
    args = ["surface", "--checkpoint", str(checkpoint), "--grid", "3", *FAST, "--out", str(out)]
    assert main([*args, "--params", "layer3.*"]) != 0
    line = error_line(capsys)
    assert "'layer3.*' matches no parameter" in line and "head.weight" in line
    assert not out.exists()  # refused before any file is written
    assert main([*args, "--params", "head.*,,stem.*"]) != 0
    assert "comma-separated" in error_line(capsys)
