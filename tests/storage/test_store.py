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

from landscape import storage as store
from landscape.analysis.surface_metrics import surface_metrics
from landscape.errors import SurfaceFileError
from landscape.specs import DataSpec, DirectionSpec, GridSpec, SurfaceSpec

DATA = Path(__file__).resolve().parents[1] / "data"
SHA = "ab" * 32
PINNED_KEY = "7fe7991f75370a8b43fc"  # key scheme landscape-surface/2


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
        assert f.attrs["format"] == "landscape-surface/3"
        assert f.attrs["status"] == "partial"
        assert json.loads(f.attrs["spec"])["grid"]["n_x"] == 5
        assert f["x"].shape == (5,) and f["y"].shape == (3,)
        for metric in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert f[metric].shape == (3, 5)
        raw = f["train_loss"][()]
        assert f["computed"][()].all()
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


def test_missing_points_follow_the_computed_mask_not_nan(tmp_path: Path) -> None:
    spec = _spec()
    path = _create(tmp_path / "s.h5", spec)
    assert np.isnan(store.read_surface(path).values["train_loss"]).all()
    np.testing.assert_array_equal(store.missing_points(path), np.arange(15))
    store.write_points(path, np.array([0, 7]), {m: np.array([1.0, 2.0]) for m in spec.metric_names})
    with pytest.raises(SurfaceFileError, match="lacks"):  # a point is all its metrics or none
        store.write_points(path, np.array([9]), {"train_loss": np.array([3.0])})
    diverged = {m: np.array([np.nan, np.inf]) for m in spec.metric_names}
    store.write_points(path, np.array([3, 4]), diverged)  # computed, but not finite
    missing = store.missing_points(path)
    assert not {0, 3, 4, 7} & set(missing.tolist()) and len(missing) == 11
    info = store.describe(store.read_surface(path))
    assert (info.done, info.total, info.nonfinite, info.status) == (4, 15, 2, "partial")
    assert info.grid == spec.grid


def test_chunks_go_to_the_journal_and_leave_the_file_untouched(tmp_path: Path) -> None:
    """A chunk costs its own bytes: the HDF5 file is not rewritten until the run closes."""
    spec = _spec()
    path = _create(tmp_path / "s.h5", spec)
    before = path.stat()
    writer = store.SurfaceWriter(path)
    writer.append(np.array([1, 2]), {m: np.array([0.5, 0.25]) for m in spec.metric_names})
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino, before.st_size, before.st_mtime_ns,
    )  # fmt: skip
    surface = store.read_surface(path)  # a reader sees the journal's points already
    assert surface.done == 2 and surface.values["train_loss"].reshape(-1)[2] == 0.25
    writer.close()
    assert not store.journal_path(path).exists()
    with h5py.File(path, "r") as f:
        assert f["computed"][()].reshape(-1).nonzero()[0].tolist() == [1, 2]


def test_journal_records_reach_the_os_at_once_and_the_disk_once_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each record is readable by another process as soon as it is appended (a kill loses
    nothing); the fsyncs are a few, not one per record, and the last one comes at close."""
    from landscape.storage import journal

    synced: list[int] = []
    monkeypatch.setattr(journal.os, "fsync", lambda fd: synced.append(fd))
    writer = journal.JournalWriter(tmp_path / "s.h5", "ab" * 16)
    opened = len(synced)
    for k in range(50):
        writer.append(np.array([k]), np.array([[0.5]]))
        records = journal.read_journal(tmp_path / "s.h5", "ab" * 16, 1)
        assert len(records) == k + 1  # already in the file another reader opens
    assert len(synced) - opened <= 2  # 50 appends within well under a few seconds
    writer.close()
    assert len(synced) - opened >= 1 and writer.handle.closed


def test_a_torn_journal_tail_is_ignored_and_then_truncated(tmp_path: Path) -> None:
    """What a kill -9 in the middle of an append leaves: the whole records still count."""
    spec = _spec()
    path = _create(tmp_path / "s.h5", spec)
    writer = store.SurfaceWriter(path)
    writer.append(np.array([0]), {m: np.array([1.0]) for m in spec.metric_names})
    writer.append(np.array([5]), {m: np.array([2.0]) for m in spec.metric_names})
    writer.journal.close()
    journal = store.journal_path(path)
    journal.write_bytes(journal.read_bytes()[:-7])  # the second record, torn
    assert store.read_surface(path).done == 1
    resumed = store.SurfaceWriter(path)
    resumed.append(np.array([6]), {m: np.array([3.0]) for m in spec.metric_names})
    resumed.close()
    np.testing.assert_array_equal(store.read_surface(path).missing()[:3], [1, 2, 3])
    assert store.read_surface(path).done == 2


def test_a_journal_of_another_file_is_never_applied(tmp_path: Path) -> None:
    spec = _spec()
    path = _create(tmp_path / "s.h5", spec)
    writer = store.SurfaceWriter(path)
    writer.append(np.array([0]), {m: np.array([1.0]) for m in spec.metric_names})
    writer.journal.close()
    stale = store.journal_path(path).read_bytes()
    path.unlink()
    _create(path, spec)  # a new file with the same name
    store.journal_path(path).write_bytes(stale)
    assert store.read_surface(path).done == 0


def test_a_writer_notices_its_file_deleted_or_truncated(tmp_path: Path) -> None:
    spec = _spec()
    chunk = {m: np.array([1.0]) for m in spec.metric_names}
    for damage in ("delete", "truncate"):
        path = _create(tmp_path / f"{damage}.h5", spec)
        writer = store.SurfaceWriter(path)
        writer.append(np.array([0]), chunk)
        if damage == "delete":
            path.unlink()
        else:
            with path.open("r+b") as handle:
                handle.truncate(path.stat().st_size // 2)
        with pytest.raises(SurfaceFileError, match="deleted, truncated or replaced"):
            writer.append(np.array([1]), chunk)
        writer.journal.close()


def test_spec_paths_are_stored_relative_to_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "surfaces"
    spec = SurfaceSpec(
        checkpoint=str(tmp_path / "checkpoints" / "c.pt"),
        data=DataSpec(data_root=str(tmp_path / "datasets")),
        grid=GridSpec(n_x=3, n_y=3),
    )
    path = _create(folder / "s.h5", spec)
    with h5py.File(path, "r") as f:
        stored = f.attrs["spec"]
    assert str(tmp_path) not in stored
    assert json.loads(stored)["checkpoint"] == "../checkpoints/c.pt"
    assert store.read_surface(path).spec == spec  # resolved back against the file's folder


def test_precision_keys_apart_and_a_resume_in_another_is_refused(tmp_path: Path) -> None:
    spec = _spec()
    assert store.surface_key(spec, SHA, "fp32") != store.surface_key(spec, SHA, "bf16")
    path = _create(tmp_path / "s.h5", spec)
    store.check_matches(path, spec, SHA, "fp32")
    with pytest.raises(SurfaceFileError, match=r"precision 'fp32'.*'bf16'"):
        store.check_matches(path, spec, SHA, "bf16")
    assert store.read_surface(path).precision == "fp32"


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
    assert key == PINNED_KEY
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


def test_check_matches_refuses_a_different_request(tmp_path: Path) -> None:
    spec = _spec()
    path = _create(tmp_path / "s.h5", spec)
    store.check_matches(path, spec, SHA)
    with pytest.raises(SurfaceFileError, match=r"grid\.n_x"):
        store.check_matches(path, _spec(n_x=6), SHA)
    with pytest.raises(SurfaceFileError, match="checkpoint contents"):
        store.check_matches(path, spec, "cd" * 32)


def test_newer_or_foreign_files_are_refused_clearly(tmp_path: Path) -> None:
    path = _create(tmp_path / "s.h5", _spec())
    with h5py.File(path, "r+") as f:
        f.attrs["format"] = "landscape-surface/4"
    with pytest.raises(SurfaceFileError, match=r"landscape-surface/4.*upgrade"):
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
    assert surface.key == "9475cf133f1cdc518c5f"  # the key it was written with
    assert surface.version == 1 and surface.nonfinite == 0 and surface.precision == "fp32"
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


def test_golden_v2_file_loads_with_its_computed_mask() -> None:
    sys.path.insert(0, str(DATA))
    try:
        import make_golden
    finally:
        sys.path.remove(str(DATA))
    surface = store.read_surface(DATA / "golden-surface-v2.h5")
    assert surface.version == 2 and surface.spec.checkpoint == str(DATA / "golden.pt")
    assert surface.status == "complete" and surface.done == surface.total == 12
    assert surface.nonfinite == 1 and np.isnan(surface.values["train_loss"].reshape(-1)[11])
    assert surface.key == store.surface_key(
        surface.spec, make_golden.CHECKPOINT_SHA256, surface.precision
    )
    xx, yy = np.meshgrid(surface.x, surface.y)
    expected = make_golden.golden_loss(xx, yy).reshape(-1)
    expected[make_golden.DIVERGED] = np.nan
    np.testing.assert_allclose(surface.values["train_loss"].reshape(-1), expected)


def test_a_v1_partial_file_is_upgraded_when_resumed(tmp_path: Path) -> None:
    path = tmp_path / "old.h5"
    path.write_bytes((DATA / "golden-surface-v1.h5").read_bytes())
    with h5py.File(path, "r+") as f:  # make it partial: two points not computed (NaN in v1)
        loss = f["train_loss"][()]
        loss.reshape(-1)[[3, 8]] = np.nan
        f["train_loss"][...] = loss
    assert store.read_surface(path).missing().tolist() == [3, 8]
    writer = store.SurfaceWriter(path)
    writer.append(np.array([3]), {"train_loss": np.array([np.inf]), "train_acc": np.array([0.5])})
    writer.close()
    surface = store.read_surface(path)
    assert surface.version == 3 and surface.missing().tolist() == [8] and surface.nonfinite == 1
