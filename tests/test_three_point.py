"""The plane through three checkpoints (Garipov et al. 2018): each net at its stated point,
orthogonal unit axes, the automatic range, the CLI and its errors."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from landscape import storage as store
from landscape.checkpoint_plane import plane_ranges, three_point_directions
from landscape.cli import main
from landscape.data import load_data
from landscape.directions import make_directions, model_parameters
from landscape.errors import SpecError
from landscape.models import build
from landscape.sources.checkpoint import load_checkpoint, save_checkpoint
from landscape.specs import DataSpec, DirectionSpec, EngineOptions, GridSpec, SurfaceSpec
from landscape.surface import compute_surface
from tests.cli_support import error_line

FAST = EngineOptions(device="cpu", workers=1, compile=False)
MODEL_ARGS = {"in_channels": 1, "num_classes": 10, "image_size": 8, "depth": 1, "width": 8}
DATA = DataSpec(train_size=256, test_size=64)


def _train(seed: int, folder: Path, width: int = 8) -> Path:
    """A few full-batch SGD steps from seed ``seed``: three distinct, partly trained nets."""
    torch.manual_seed(seed)
    args = {**MODEL_ARGS, "width": width}
    model = build("mlp-plain", **args)
    inputs, labels = load_data(DATA, "train")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(20):
        optimizer.zero_grad()
        F.cross_entropy(model(inputs), labels).backward()
        optimizer.step()
    path = folder / f"seed{seed}-w{width}.pt"
    return save_checkpoint(path, model, model_name="mlp-plain", model_args=args, metadata={})


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("seeds")
    return [_train(seed, folder) for seed in (0, 1, 2)]


def _naive_loss(path: Path) -> float:
    """The net's own mean cross-entropy: load it, loop over the data in batches."""
    model, _ = load_checkpoint(path)
    model.eval()
    inputs, labels = load_data(DATA, "train")
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(labels), 50):
            out = model(inputs[start : start + 50])
            total += float(F.cross_entropy(out, labels[start : start + 50], reduction="sum"))
    return total / len(labels)


def _directions(seeds: list[Path]) -> DirectionSpec:
    return DirectionSpec(kind="three_point", through_checkpoints=(str(seeds[1]), str(seeds[2])))


def test_each_net_sits_at_its_stated_point(seeds: list[Path], tmp_path: Path) -> None:
    model, _ = load_checkpoint(seeds[0])
    _, info = make_directions(model, _directions(seeds), 2)
    points = info["points"]
    assert [p["name"] for p in points] == ["checkpoint", seeds[1].name, seeds[2].name]
    assert (points[0]["x"], points[0]["y"], points[1]["y"]) == (0.0, 0.0, 0.0)
    assert points[1]["x"] > 0 and points[2]["y"] > 0
    for k, (point, path) in enumerate(zip(points, seeds, strict=True)):
        # a 1×1 grid at the point: the stored value is the engine's, at the file's coordinates
        grid = GridSpec(
            x_range=(point["x"], point["x"]), n_x=1, y_range=(point["y"], point["y"]), n_y=1
        )
        spec = SurfaceSpec(
            checkpoint=str(seeds[0]), data=DATA, grid=grid, directions=_directions(seeds)
        )
        out = compute_surface(spec, tmp_path / f"point{k}.h5", options=FAST)
        stored = float(store.read_surface(out).values["train_loss"][0, 0])
        assert stored == pytest.approx(_naive_loss(path), rel=1e-5), path.name


def test_axes_are_orthonormal_and_span_the_three_nets(seeds: list[Path]) -> None:
    model, _ = load_checkpoint(seeds[0])
    (x_hat, y_hat), info = make_directions(model, _directions(seeds), 2)

    def flat(d: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([t.double().flatten() for t in d.values()])

    x, y = flat(x_hat), flat(y_hat)
    assert float(x.norm()) == pytest.approx(1.0, abs=1e-6)
    assert float(y.norm()) == pytest.approx(1.0, abs=1e-6)
    assert abs(float(x @ y)) < 1e-6
    base = flat(model_parameters(model))
    for point, path in zip(info["points"], seeds, strict=True):
        other = flat(model_parameters(load_checkpoint(path)[0]))
        rebuilt = base + point["x"] * x + point["y"] * y
        assert float((rebuilt - other).norm()) < 1e-5 * float(other.norm())
    assert set(x_hat) == set(model_parameters(model))  # every parameter, BN buffers none


def test_the_same_net_twice_spans_no_plane(seeds: list[Path]) -> None:
    params = model_parameters(load_checkpoint(seeds[0])[0])
    other = model_parameters(load_checkpoint(seeds[1])[0])
    with pytest.raises(SpecError, match="same weights"):
        three_point_directions(params, params, other)
    on_line = {n: 2 * other[n] - params[n] for n in params}  # θ₃ = θ₁ + 2(θ₂ − θ₁)
    with pytest.raises(SpecError, match="on the line"):
        three_point_directions(params, other, on_line)


def test_plane_ranges_hold_the_points_with_a_margin() -> None:
    points = [{"x": 0.0, "y": 0.0}, {"x": 10.0, "y": 0.0}, {"x": 4.0, "y": 5.0}]
    assert plane_ranges(points) == [(-2.0, 12.0), (-1.0, 6.0)]


def test_spec_needs_two_through_checkpoints_with_three_point_only() -> None:
    with pytest.raises(SpecError, match="exactly 2"):
        DirectionSpec(kind="three_point", through_checkpoints=("a.pt",))
    with pytest.raises(SpecError, match="only with"):
        DirectionSpec(kind="random", through_checkpoints=("a.pt", "b.pt"))
    with pytest.raises(SpecError, match="only with"):
        DirectionSpec(kind="three_point")


def test_cli_plane_of_three_seeds_and_info(
    seeds: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plane.h5"
    argv = ["surface", "--checkpoint", str(seeds[0]), "--directions", "three_point",
            "--through", str(seeds[1]), str(seeds[2]), "--grid", "5", "--train-size", "256",
            "--test-size", "64", "--device", "cpu", "--workers", "1", "--no-compile",
            "--quiet", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    surface = store.read_surface(out)
    points = surface.attrs["directions_info"]["points"]
    assert main(argv) == 0  # the same command again: the same fitted range, the finished file
    assert store.read_surface(out).attrs["generation"] == surface.attrs["generation"]
    xs, ys = [p["x"] for p in points], [p["y"] for p in points]
    width, height = max(xs) - min(xs), max(ys) - min(ys)
    assert surface.x[0] == pytest.approx(min(xs) - 0.2 * width)
    assert surface.x[-1] == pytest.approx(max(xs) + 0.2 * width)
    assert surface.y is not None
    assert surface.y[0] == pytest.approx(-0.2 * height)
    assert surface.y[-1] == pytest.approx(1.2 * height)
    assert np.isfinite(surface.values["train_loss"]).all()
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "three_point: unit axes in parameter units" in text
    for point, path in zip(points, seeds, strict=True):
        assert f"{path.name} ({point['x']:.6g}, {point['y']:.6g})" in text
    assert main(["info", "--json", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    stored = summary["provenance"]["directions_info"]["points"]
    assert all(math.isclose(a["x"], b["x"]) for a, b in zip(stored, points, strict=True))
    # its recipe names the two others beside the checkpoint and rebuilds the same surface
    recipe = tmp_path / "plane.recipe.json"
    assert main(["recipe", str(out), "--out", str(recipe)]) == 0
    directions = json.loads(recipe.read_text())["spec"]["directions"]
    assert directions["through_checkpoints"] == [seeds[1].name, seeds[2].name]
    rebuilt = tmp_path / "rebuilt.h5"
    argv = ["surface", "--recipe", str(recipe), "--checkpoint", str(seeds[0]), "--device", "cpu",
            "--workers", "1", "--no-compile", "--quiet", "--out", str(rebuilt)]  # fmt: skip
    assert main(argv) == 0
    assert store.read_surface(rebuilt).attrs["key"] == surface.attrs["key"]


@pytest.mark.parametrize("other", ["wider", "resnet20"])
def test_cli_wrong_architecture_is_one_error_line(
    other: str, seeds: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if other == "wider":  # the same names, other shapes
        wide = _train(3, tmp_path, width=16)
    else:  # other names
        args = {"in_channels": 1, "num_classes": 10, "image_size": 8}
        wide = save_checkpoint(
            tmp_path / "resnet.pt", build(other, **args), model_name=other, model_args=args,
            metadata={},
        )  # fmt: skip
    argv = ["surface", "--checkpoint", str(seeds[0]), "--directions", "three_point",
            "--through", str(seeds[1]), str(wide), "--grid", "3", "--train-size", "64",
            "--device", "cpu", "--quiet", "--out", str(tmp_path / "bad.h5")]  # fmt: skip
    assert main(argv) != 0
    line = error_line(capsys)
    assert "architecture" in line and wide.name in line
    assert not (tmp_path / "bad.h5").exists()


def test_cli_three_point_needs_through(
    seeds: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["surface", "--checkpoint", str(seeds[0]), "--directions", "three_point",
            "--through", str(seeds[1]), "--out", str(tmp_path / "s.h5")]  # fmt: skip
    assert main(argv) != 0
    assert "--through" in error_line(capsys)


def test_the_contour_figure_marks_the_three_nets(seeds: list[Path], tmp_path: Path) -> None:
    """``landscape plot``'s data carries the points, and the page's figure (figure.js, run by
    node) draws them as labelled markers over the contour."""
    from landscape.plot.html import FIGURE_JS, surface_data

    grid = GridSpec(x_range=(-5.0, 40.0), n_x=3, y_range=(-5.0, 35.0), n_y=3)
    spec = SurfaceSpec(
        checkpoint=str(seeds[0]), data=DATA, grid=grid, directions=_directions(seeds)
    )
    data = surface_data(store.read_surface(compute_surface(spec, tmp_path / "p.h5", options=FAST)))
    points = store.read_surface(tmp_path / "p.h5").attrs["directions_info"]["points"]
    assert data["nets"]["names"] == [p.name for p in seeds]
    assert data["nets"]["x"] == [p["x"] for p in points]
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: figure.js is checked in the browser tests")
    script = (
        f"import {{ figure }} from {json.dumps(FIGURE_JS.as_uri())};\n"
        f"const surface = {json.dumps(data)};\n"
        "const fig = figure(surface, { metric: 'train_loss', view: 'contour' });\n"
        "console.log(JSON.stringify(fig.data.filter((t) => t.name === 'nets')));\n"
    )
    done = subprocess.run(
        [node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    (trace,) = json.loads(done.stdout)
    assert trace["mode"] == "markers+text" and trace["text"] == data["nets"]["names"]
    assert trace["x"] == data["nets"]["x"] and trace["y"] == data["nets"]["y"]
