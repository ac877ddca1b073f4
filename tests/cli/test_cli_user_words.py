"""What ``reproduce --help`` promises is the recipe that runs, and ``plot``, ``export``,
``gradient-flow`` and ``surface --directions interpolate`` word their errors as typed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cli_support import error_line, tiny_mlp_checkpoint

from landscape.cli import main
from landscape.report.recipe import FAMILIES, QUICK, ReproduceSpec


def _option_help(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """``reproduce --help`` as option → its help text (wide enough that nothing wraps)."""
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit) as done:
        main(["reproduce", "skip-vs-plain", "--help"])
    assert done.value.code == 0
    entries: list[str] = []
    for line in capsys.readouterr().out.splitlines():
        if re.match(r"  -", line):
            entries.append(line)  # an option's invocation, its help after two spaces or below
        elif entries and line.startswith("   "):
            entries[-1] += "\n" + line
        else:
            entries.append("")
    helps = {}
    for entry in filter(None, entries):
        invocation, help_text = re.split(r"\s{2,}|\n", entry.strip(), maxsplit=1)
        helps[invocation.split()[0].rstrip(",")] = " ".join(help_text.split())
    return helps


def _typed(pairs: tuple[tuple[float, int], ...]) -> list[str]:
    return [f"{half:g}:{n}" for half, n in pairs]


def test_reproduce_help_shows_the_recipe_defaults(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    helps = _option_help(capsys, monkeypatch)
    spec = ReproduceSpec()

    seeds = re.search(r"\(default ([\d ]+); --quick: ([\d ]+)\)", helps["--seeds"])
    assert seeds, helps["--seeds"]
    assert tuple(map(int, seeds.group(1).split())) == spec.seeds
    assert tuple(map(int, seeds.group(2).split())) == QUICK["seeds"]

    ranges = re.search(r"\(default ([\d.: ]+); --quick: ([\d.: ]+)\)", helps["--range"])
    assert ranges, helps["--range"]
    assert ranges.group(1).split() == _typed(spec.ranges)
    assert ranges.group(2).split() == _typed(QUICK["ranges"])

    epochs = re.search(r"\(default (\d+); --quick: (.+)\)", helps["--epochs"])
    assert epochs, helps["--epochs"]
    assert int(epochs.group(1)) == spec.epochs
    shown: dict[str, int] = {}
    for part in epochs.group(2).split(", "):
        found = re.fullmatch(r"(\d+) for (.+)", part)
        assert found, part
        shown |= {family: int(found.group(1)) for family in found.group(2).split(" and ")}
    assert shown == {name: family.quick_epochs for name, family in FAMILIES.items()}

    pairs = " ".join(f"{skip}:{plain}" for skip, plain in spec.pairs)
    assert pairs in helps["--pairs"]
    assert f"default {spec.data.name}" in helps["--dataset"]
    assert "gate_bias=-4" in helps["--model-arg"]  # the highway family's own argument
    quick = helps["--quick"]
    assert f"seeds {' '.join(map(str, QUICK['seeds']))}," in quick
    assert f"the Hessian on {QUICK['hessian_samples']} images" in quick
    points = QUICK["curvature_points"]
    assert f"a {points}×{points} curvature map" in quick


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    tiny_mlp_checkpoint(tmp_path / "sub")
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["plot", "sub/nope.h5"], "'sub/nope.h5'"),
        (["plot", "sub/nope.h5", "--out", "sub/nope.html"], "'sub/nope.h5'"),
        (["export", "sub/nope.h5", "--vtp", "sub/x.vtp"], "'sub/nope.h5'"),
        (["gradient-flow", "--surface", "sub/nope.h5"], "surface file sub/nope.h5 does not exist"),
        (["gradient-flow", "--checkpoint", "sub/nope.pt"], "checkpoint sub/nope.pt does not exist"),
        (["gradient-flow", "--checkpoint", "sub/mlp.pt", "--train-size", "0"],
         "--train-size must be a positive integer"),
        (["gradient-flow", "--checkpoint", "sub/mlp.pt", "--batch-size", "0", "--quiet",
          "--device", "cpu"], "--batch-size must be >= 1"),
    ],
)  # fmt: skip
def test_missing_files_and_bad_values_as_typed(
    folder: Path, capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    assert main(argv) != 0
    line = error_line(capsys)
    assert words in line, line
    for field in ("batch_size", "train_size", "'nope.h5'", " nope.pt"):
        assert field not in line, line


def test_interpolate_without_target_names_the_flag(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["surface", "--checkpoint", "sub/mlp.pt", "--out", "sub/s.h5"]
    assert main([*argv, "--directions", "interpolate", "--device", "cpu", "--quiet"]) == 2
    line = error_line(capsys)
    assert "--target" in line and "target_checkpoint" not in line, line
    assert not (folder / "sub" / "s.h5").exists()
