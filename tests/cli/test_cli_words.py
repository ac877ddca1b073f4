"""Errors name what the user typed: a missing file with its folder, a bad value by its flag
(``--range``, ``--grid``, ``--train-size``), never the library's field names."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import error_line, tiny_mlp_checkpoint

from landscape.cli import main
from landscape.cli.wording import user_words


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cache").mkdir()
    tiny_mlp_checkpoint(tmp_path / "cache")
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["surface", "--checkpoint", "cache/nope.pt", "--out", "cache/s.h5"],
         "checkpoint cache/nope.pt does not exist"),
        (["hessian", "--checkpoint", "cache/nope.pt"], "checkpoint cache/nope.pt does not exist"),
        (["hessian", "--surface", "cache/nope.h5"], "surface file cache/nope.h5 does not exist"),
        (["info", "cache/nope.h5"], "'cache/nope.h5'"),
        (["surface", "--checkpoint", "cache/mlp.pt", "--out", "cache/s.h5", "--range", "1", "-1"],
         "--range must have min < max"),
        (["surface", "--checkpoint", "cache/mlp.pt", "--out", "cache/s.h5", "--grid", "0"],
         "--grid must be a positive integer"),
        (["surface", "--checkpoint", "cache/mlp.pt", "--out", "cache/s.h5", "--yrange", "1", "0"],
         "--yrange must have min < max"),
        (["surface", "--checkpoint", "cache/mlp.pt", "--out", "cache/s.h5", "--train-size", "0"],
         "--train-size must be a positive integer"),
        (["hessian", "--checkpoint", "cache/mlp.pt", "--test-size", "0"],
         "--test-size must be a positive integer"),
    ],
)  # fmt: skip
def test_errors_name_what_was_typed(
    folder: Path, capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    assert main(argv) == 2
    line = error_line(capsys)
    assert words in line, line
    assert not line.startswith("error: size")
    for field in ("x_range", "y_range", "n_x"):
        assert field not in line, line


def test_dotted_fields_and_quoted_names_are_translated() -> None:
    message = "'s.h5' holds a surface of a different request (differs in: grid.n_x, grid.z_range)"
    assert user_words(message, ["cache/s.h5"]) == (
        "'cache/s.h5' holds a surface of a different request (differs in: --grid, --zrange)"
    )
    assert user_words("checkpoint w.pt.", ["runs/w.pt"]) == "checkpoint runs/w.pt."
    assert user_words("checkpoint w.pt.bak", ["runs/w.pt"]) == "checkpoint w.pt.bak"
