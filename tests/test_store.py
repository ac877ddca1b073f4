"""The HDF5 surface file: layout, orientation, missing points, cache keys, errors, golden file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from landscape import store
from landscape.errors import SurfaceFileError
from landscape.specs import DataSpec, DirectionSpec, GridSpec, SurfaceSpec
from landscape.surface import surface_metrics

DATA = Path(__file__).resolve().parent / "data"
SHA = "ab" * 32


def _spec(**grid: object) -> SurfaceSpec:
    g = {"x_range": (-1.0, 1.0), "n_x": 5, "y_range": (-0.5, 1.5), "n_y": 3, **grid}
    return SurfaceSpec(checkpoint="ckpt.pt", grid=GridSpec(**g), splits=("train", "test"))


def _directions(ndim: int) -> list[dict[str, torch.Tensor]]:
    return [
        {"fc.weight": torch.full((2, 3), float(k + 1)), "fc.bias": torch.zeros(2)}
        for k in range(ndim)
    ]


def _create(path: Path, spec: SurfaceSpec, sha: str = SHA) -> Path:
    x, y = store.grid_coordinates(spec.grid)
    provenance = {"checkpoint_sha256": sha, "model": "toy", "versions": {"torch": "x"}}
    return store.create_surface_file(
        path, spec, x=x, y=y, directions=_directions(spec.grid.ndim), provenance=provenance
    )


def _f(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return 10 * x + y  # distinguishes (x, y) from (y, x)


def test_layout_is_ny_by_nx_and_not_transposed(tmp_path: Path) -> None:
    spec = _spec()  # nx = 5 ≠ ny = 3
    path = _create(tmp_path / "s.h5", spec)
    x, y = store.grid_coordinates(spec.grid)
    flat = np.arange(spec.grid.n_points)
    coords = store.flat_coordinates(x, y, flat)
    values = {m: _f(coords[:, 0], coords[:, 1]) for m in spec.metric_names}
    store.write_points(path, flat, values)

    with h5py.File(path, "r") as f:  # plain h5py, as docs/format.md promises
        assert f.attrs["format"] == "landscape-surface/1"
        assert f.attrs["status"] == "partial"
        assert json.loads(f.attrs["spec"])["grid"]["n_x"] == 5
        assert f["x"].shape == (5,) and f["y"].shape == (3,)
        for metric in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert f[metric].shape == (3, 5)
        raw = f["train_loss"][()]
        assert set(f["directions/x"]) == {"fc.weight", "fc.bias"}
    for j in range(3):
        for i in range(5):
            assert raw[j, i] == _f(x[i], y[j])
    surface = store.read_surface(path)
    np.testing.assert_array_equal(surface.values["test_acc"], raw)
    assert surface.y is not None and surface.ndim == 2 and surface.done == surface.total == 15


def test_one_dimensional_file_has_no_y(tmp_path: Path) -> None:
    spec = _spec(y_range=None, n_y=None)
    path = _create(tmp_path / "s.h5", spec)
    store.write_points(path, np.array([0, 4]), {m: np.array([1.0, 2.0]) for m in spec.metric_names})
    with h5py.File(path, "r") as f:
        assert "y" not in f and f["train_loss"].shape == (5,)
        assert "y" not in f["directions"]
    surface = store.read_surface(path)
    assert surface.y is None and surface.values["train_loss"][4] == 2.0
    np.testing.assert_array_equal(store.missing_points(path), [1, 2, 3])


def test_missing_points_are_nan_until_every_metric_is_written(tmp_path: Path) -> None:
    spec = _spec()
    path = _create(tmp_path / "s.h5", spec)
    assert np.isnan(store.read_surface(path).values["train_loss"]).all()
    np.testing.assert_array_equal(store.missing_points(path), np.arange(15))
    store.write_points(path, np.array([0, 7]), {m: np.array([1.0, 2.0]) for m in spec.metric_names})
    store.write_points(path, np.array([9]), {"train_loss": np.array([3.0])})  # one metric only
    missing = store.missing_points(path)
    assert 0 not in missing and 7 not in missing and 9 in missing and len(missing) == 13
    summary = store.surface_summary(path)
    assert (summary["done"], summary["total"], summary["status"]) == (2, 15, "partial")
    assert summary["grid"] == {"nx": 5, "ny": 3, "xrange": [-1.0, 1.0], "yrange": [-0.5, 1.5]}


def test_directions_round_trip_by_parameter_name(tmp_path: Path) -> None:
    path = _create(tmp_path / "s.h5", _spec())
    back = store.read_directions(path)
    for got, want in zip(back, _directions(2), strict=True):
        assert got.keys() == want.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name])


def test_surface_key_is_stable_and_sensitive() -> None:
    spec = _spec()
    key = store.surface_key(spec, SHA)
    assert key == store.surface_key(_spec(), SHA)
    assert len(key) == 20 and int(key, 16) >= 0
    # Pinned: a change here silently orphans every cached surface; bump FORMAT instead.
    assert key == "527cd8e2605641114e78"
    moved = SurfaceSpec(checkpoint="/elsewhere/c.pt", grid=spec.grid, splits=spec.splits)
    assert store.surface_key(moved, SHA) == key  # keyed by checkpoint bytes, not path
    relocated = SurfaceSpec(
        checkpoint="ckpt.pt", data=DataSpec(data_root="/data"), grid=spec.grid, splits=spec.splits
    )
    assert store.surface_key(relocated, SHA) == key
    others = [
        store.surface_key(spec, "cd" * 32),
        store.surface_key(_spec(n_x=7), SHA),
        store.surface_key(_spec(y_range=(-1.0, 1.0)), SHA),
        store.surface_key(SurfaceSpec(checkpoint="ckpt.pt", grid=spec.grid), SHA),
        store.surface_key(
            SurfaceSpec(
                checkpoint="ckpt.pt",
                grid=spec.grid,
                splits=spec.splits,
                directions=DirectionSpec(seed=1),
            ),
            SHA,
        ),
    ]
    assert len({key, *others}) == len(others) + 1


def test_open_or_create_refuses_a_different_request(tmp_path: Path) -> None:
    spec = _spec()
    path = _create(tmp_path / "s.h5", spec)
    x, y = store.grid_coordinates(spec.grid)
    kwargs = {"x": x, "y": y, "directions": _directions(2)}
    assert (
        store.open_or_create(path, spec, provenance={"checkpoint_sha256": SHA}, **kwargs) is False
    )
    other = _spec(n_x=6)
    with pytest.raises(SurfaceFileError, match=r"grid\.n_x"):
        store.open_or_create(path, other, provenance={"checkpoint_sha256": SHA}, **kwargs)
    with pytest.raises(SurfaceFileError, match="checkpoint contents"):
        store.check_matches(path, spec, "cd" * 32)
    fresh = tmp_path / "new.h5"
    assert store.open_or_create(fresh, spec, provenance={"checkpoint_sha256": SHA}, **kwargs)


def test_newer_or_foreign_files_are_refused_clearly(tmp_path: Path) -> None:
    path = _create(tmp_path / "s.h5", _spec())
    with h5py.File(path, "r+") as f:
        f.attrs["format"] = "landscape-surface/2"
    with pytest.raises(SurfaceFileError, match=r"landscape-surface/2.*upgrade"):
        store.read_surface(path)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(SurfaceFileError, match="not a landscape surface"):
        store.read_surface(foreign)
    text = tmp_path / "text.h5"
    text.write_text("hello")
    with pytest.raises(SurfaceFileError, match="cannot open"):
        store.read_surface(text)
    with pytest.raises(SurfaceFileError, match="no surface file"):
        store.read_surface(tmp_path / "absent.h5")


def test_read_errors_name_the_hdf5_key(tmp_path: Path) -> None:
    path = _create(tmp_path / "s.h5", _spec())
    with h5py.File(path, "r+") as f:
        del f["test_acc"]
    with pytest.raises(SurfaceFileError, match="'test_acc'"):
        store.read_surface(path)
    with h5py.File(path, "r+") as f:
        f.attrs["spec"] = "{not json"
    with pytest.raises(SurfaceFileError, match="'spec'"):
        store.read_surface(path)


def test_reader_waits_for_a_writer_in_another_process(tmp_path: Path) -> None:
    """HDF5 locks a file opened for writing; readers retry instead of failing."""
    path = _create(tmp_path / "s.h5", _spec())
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, h5py\n"
            f"f = h5py.File({str(path)!r}, 'r+')\n"
            "print('locked', flush=True)\n"
            "time.sleep(1.0)\n"
            "f.close()\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        surface = store.read_surface(path)  # would raise "unable to lock file" without retry
        assert surface.total == 15
    finally:
        holder.wait(timeout=30)


def test_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    spec = _spec()
    path = _create(tmp_path / "s.h5", spec)
    store.write_points(path, np.array([1]), {m: np.array([0.5]) for m in spec.metric_names})
    store.mark_complete(path, metrics={"sharpness": 1.5})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]
    surface = store.read_surface(path)
    assert surface.status == "complete" and surface.metrics == {"sharpness": 1.5}


def test_metrics_of_a_bowl_and_a_saddle() -> None:
    x = np.linspace(-1, 1, 11)
    y = np.linspace(-1, 1, 9)
    xx, yy = np.meshgrid(x, y)
    bowl = surface_metrics(x, y, {"train_loss": xx**2 + yy**2}, ("train_loss",))
    assert bowl["train_loss_min"] == 0.0 and bowl["train_loss_center"] == 0.0
    assert bowl["convex_fraction"] == 1.0 and bowl["train_loss_nonconvexity"] == 0.0
    # radius = max(0.25, grid steps 0.2 and 0.25) = 0.25: the highest neighbour is (0, ±0.25);
    # Keskar sharpness = 100 · (0.25² − 0) / (1 + 0)
    assert bowl["sharpness_radius"] == 0.25
    assert bowl["sharpness"] == pytest.approx(100 * 0.25**2)
    saddle = surface_metrics(x, y, {"train_loss": 2 + xx**2 - yy**2}, ("train_loss",))
    assert saddle["convex_fraction"] == 0.0
    assert saddle["train_loss_nonconvexity"] == pytest.approx(1.0)
    noisy = xx**2 + yy**2 + 0.05 * np.random.default_rng(0).standard_normal(xx.shape)
    rough = surface_metrics(x, y, {"train_loss": noisy}, ("train_loss",))
    assert bowl["roughness"] < 1e-9 < rough["roughness"]


def test_golden_v1_file_still_loads() -> None:
    """A file written by landscape 0.1 (tests/data/make_golden.py) must keep loading."""
    sys.path.insert(0, str(DATA))
    try:
        import make_golden
    finally:
        sys.path.remove(str(DATA))
    path = DATA / "golden-surface-v1.h5"
    surface = store.read_surface(path)
    assert surface.spec == make_golden.SPEC
    assert surface.status == "complete" and surface.done == surface.total == 12
    assert surface.key == store.surface_key(make_golden.SPEC, make_golden.CHECKPOINT_SHA256)
    x, y = surface.x, surface.y
    assert y is not None
    np.testing.assert_allclose(x, np.linspace(-1, 1, 4))
    np.testing.assert_allclose(y, [-0.5, 0.0, 0.5])
    xx, yy = np.meshgrid(x, y)
    np.testing.assert_allclose(surface.values["train_loss"], make_golden.golden_loss(xx, yy))
    np.testing.assert_allclose(surface.values["train_acc"], make_golden.golden_acc(xx, yy))
    assert surface.attrs["model"] == "golden-linear"
    assert surface.attrs["model_args"] == {"in_features": 3, "num_classes": 2}
    assert surface.metrics["train_loss_min"] == pytest.approx(
        float(surface.values["train_loss"].min())
    )
    for name in ("sharpness", "roughness", "convex_fraction", "train_acc_center"):
        assert name in surface.metrics
    directions = store.read_directions(path)
    for got, want in zip(directions, make_golden.golden_directions(), strict=True):
        torch.testing.assert_close(got["fc.weight"], want["fc.weight"])
