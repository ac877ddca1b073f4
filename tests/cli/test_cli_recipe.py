"""``landscape recipe`` and ``landscape surface --recipe``: a figure's recipe rebuilds its file,
and every way a rebuild would differ is named before anything is computed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli_support import MODEL_ARGS, error_line, tiny_mlp_checkpoint

from landscape.cli import main
from landscape.models import build
from landscape.sources.checkpoint import file_digest, save_checkpoint
from landscape.storage import read_surface

ENGINE = ["--workers", "1", "--no-compile", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A 3×3 surface of the tiny MLP on both digits splits (48 training samples), and its
    recipe as ``landscape recipe`` prints it."""
    folder = tmp_path_factory.mktemp("made")
    checkpoint = tiny_mlp_checkpoint(folder)
    out = folder / "cache" / "s.h5"
    args = ["surface", "--checkpoint", str(checkpoint), "--grid", "3", "--range", "-0.5", "1"]
    extra = ["--train-size", "48", "--splits", "train", "test", "--seed", "3"]
    assert main([*args, *extra, *ENGINE, "--out", str(out)]) == 0
    recipe = folder / "s.recipe.json"
    assert main(["recipe", str(out), "--out", str(recipe)]) == 0
    return checkpoint, out, recipe


def _rebuild(recipe: Path, checkpoint: Path, out: Path, *extra: str) -> int:
    args = ["surface", "--recipe", str(recipe), "--checkpoint", str(checkpoint)]
    return main([*args, *ENGINE, *extra, "--out", str(out)])


def test_recipe_names_what_made_the_surface(
    made: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, out, recipe_path = made
    capsys.readouterr()
    assert main(["recipe", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(recipe_path.read_text())
    assert printed["format"] == "landscape-recipe" and printed["version"] == 1
    assert printed["checkpoint"] == {"file": "mlp.pt", "sha256": file_digest(checkpoint)}
    assert printed["model"] == {"name": "mlp-plain", "args": MODEL_ARGS, "source": "zoo"}
    spec = printed["spec"]
    assert spec["grid"]["x_range"] == [-0.5, 1.0] and spec["grid"]["n_y"] == 3
    assert spec["data"]["train_size"] == 48 and spec["splits"] == ["train", "test"]
    assert spec["directions"]["seed"] == 3 and spec["directions"]["normalization"] == "filter"
    assert printed["precision"] == "fp32" and printed["estimate"] is None
    assert printed["bn"] == "eval" and printed["loss"]["name"] == "cross_entropy"
    assert set(printed["versions"]) >= {"landscape", "torch", "numpy", "python"}
    assert printed["surface"]["key"] == read_surface(out).key
    assert str(out.parent) not in recipe_path.read_text()  # no machine path in a recipe


def test_recipe_rebuilds_the_file(
    made: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, out, recipe = made
    rebuilt = tmp_path / "rebuilt.h5"
    capsys.readouterr()
    assert _rebuild(recipe, checkpoint, rebuilt) == 0
    assert capsys.readouterr().err == ""  # nothing differs, nothing to warn about
    original, again = read_surface(out), read_surface(rebuilt)
    assert again.key == original.key and again.status == "complete"
    assert set(again.values) == {"train_loss", "train_acc", "test_loss", "test_acc"}
    for metric, values in original.values.items():
        np.testing.assert_allclose(again.values[metric], values, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(again.x, original.x)


def test_another_checkpoint_is_named_and_refused(
    made: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, recipe = made
    torch.manual_seed(1)
    narrow = {**MODEL_ARGS, "width": 4}
    other = save_checkpoint(
        tmp_path / "other.pt", build("mlp-plain", **narrow), model_name="mlp-plain",
        model_args=narrow, metadata={},
    )  # fmt: skip
    out = tmp_path / "o.h5"
    capsys.readouterr()
    assert _rebuild(recipe, other, out) == 2
    line = error_line(capsys)
    assert "checkpoint bytes (sha256)" in line and "model arguments" in line
    assert "--allow-differences" in line and not out.exists()
    assert _rebuild(recipe, other, out, "--allow-differences") == 0
    err = capsys.readouterr().err
    assert "warning: checkpoint bytes (sha256)" in err and "is not the recipe's" in err
    assert read_surface(out).status == "complete"


def _edited(recipe: Path, folder: Path, change: Any) -> Path:
    data = json.loads(recipe.read_text())
    change(data)
    path = folder / "edited.recipe.json"
    path.write_text(json.dumps(data))
    return path


def test_versions_warn_and_unknown_model_or_flags_refuse(
    made: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, out, recipe = made
    older = _edited(recipe, tmp_path, lambda r: r["versions"].update(torch="1.0.0"))
    capsys.readouterr()
    assert _rebuild(older, checkpoint, tmp_path / "v.h5") == 0
    err = capsys.readouterr().err
    assert "warning: torch version: recipe 1.0.0" in err and "Traceback" not in err
    assert read_surface(tmp_path / "v.h5").key == read_surface(out).key

    unknown = _edited(recipe, tmp_path, lambda r: r["model"].update(name="resnet9000"))
    assert _rebuild(unknown, checkpoint, tmp_path / "u.h5") == 2
    assert "unknown model" in error_line(capsys)
    assert _rebuild(recipe, checkpoint, tmp_path / "g.h5", "--grid", "5", "--seed", "1") == 2
    assert "--grid, --seed cannot go with --recipe" in error_line(capsys)
    future = _edited(recipe, tmp_path, lambda r: r.update(version=99))
    assert _rebuild(future, checkpoint, tmp_path / "f.h5") == 2
    assert "recipe version 99" in error_line(capsys)
    assert main(["recipe", str(tmp_path / "none.h5")]) == 2
    assert "none.h5" in error_line(capsys)


def test_an_estimated_surface_rebuilds_with_its_sample_order(
    made: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    checkpoint = made[0]
    out = tmp_path / "e.h5"
    args = ["surface", "--checkpoint", str(checkpoint), "--grid", "3", *ENGINE]
    assert main([*args, "--estimate", "10%", "--estimate-seed", "4", "--out", str(out)]) == 0
    recipe = tmp_path / "e.recipe.json"
    assert main(["recipe", str(out), "--out", str(recipe)]) == 0
    stored = json.loads(recipe.read_text())["estimate"]
    assert stored["target"] == 0.1 and stored["seed"] == 4 and stored["relative"] is True
    rebuilt = tmp_path / "e2.h5"
    assert _rebuild(recipe, checkpoint, rebuilt) == 0
    original, again = read_surface(out), read_surface(rebuilt)
    assert again.key == original.key and again.estimate is not None
    assert original.estimate is not None
    n, n_again = original.estimate.splits["train"].n(), again.estimate.splits["train"].n()
    np.testing.assert_array_equal(n_again, n)
    np.testing.assert_allclose(again.values["train_loss"], original.values["train_loss"], atol=1e-6)
