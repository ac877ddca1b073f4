"""3D loss volumes: the grid, the file's [k, j, i] layout, the API's arrays, and a real
resnet20 volume that survives ``kill -9`` and equals the naive per-point loop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from pydantic import ValidationError

from api.db import SurfaceRecord
from api.schemas.surface import GridRequest
from api.views import surface_data
from landscape import storage as store
from landscape.data import load_data
from landscape.engine import reference_evaluate
from landscape.errors import SpecError, SurfaceFileError
from landscape.models import build
from landscape.plot.html import write_html
from landscape.sources.checkpoint import load_checkpoint, save_checkpoint
from landscape.specs import GridSpec, SurfaceSpec

SHA = "ab" * 32
CLI = "import sys; from landscape.cli import main; sys.exit(main(sys.argv[1:]))"
VOLUME = GridSpec(x_range=(-1.0, 1.0), n_x=5, y_range=(-0.5, 1.5), n_y=3, z_range=(0.0, 3.0), n_z=4)


def _f(coords: np.ndarray) -> np.ndarray:
    return 100 * coords[:, 0] + 10 * coords[:, 1] + coords[:, 2]  # tells x, y and z apart


def _volume_file(path: Path) -> tuple[Path, SurfaceSpec]:
    spec = SurfaceSpec(checkpoint="ckpt.pt", grid=VOLUME)
    x, y = store.grid_coordinates(spec.grid)
    directions = [{"fc.weight": torch.full((2, 3), float(k + 1))} for k in range(3)]
    store.create_surface_file(
        path, spec, x=x, y=y, directions=directions, provenance={"checkpoint_sha256": SHA}
    )
    return path, spec


def test_a_volume_grid_counts_its_third_axis() -> None:
    assert VOLUME.ndim == 3 and VOLUME.n_points == 5 * 3 * 4
    assert store.grid_shape(VOLUME) == (4, 3, 5)
    with pytest.raises(SpecError, match="n_z and z_range"):
        GridSpec(n_z=3)
    with pytest.raises(SpecError, match="n_y and y_range"):
        GridSpec(y_range=None, n_y=None, z_range=(-1.0, 1.0), n_z=3)
    plane = GridSpec(x_range=VOLUME.x_range, n_x=5, y_range=VOLUME.y_range, n_y=3)
    spec = SurfaceSpec(checkpoint="c.pt", grid=VOLUME)
    assert store.surface_key(spec, SHA) != store.surface_key(
        SurfaceSpec(checkpoint="c.pt", grid=plane), SHA
    )


def test_the_file_holds_value_k_j_i_at_x_i_y_j_z_k(tmp_path: Path) -> None:
    path, spec = _volume_file(tmp_path / "v.h5")
    x, y = store.grid_coordinates(spec.grid)
    z = store.z_coordinates(spec.grid)
    flat = np.arange(spec.grid.n_points)
    coords = store.flat_coordinates(x, y, flat, z)
    store.write_points(path, flat[:-1], {m: _f(coords[:-1]) for m in spec.metric_names})

    with h5py.File(path, "r") as f:  # plain h5py, as docs/format.md promises
        assert f.attrs["format"] == "landscape-surface/3" and f.attrs["ndim"] == 3
        np.testing.assert_array_equal(f["z"][()], [0.0, 1.0, 2.0, 3.0])
        raw = f["train_loss"][()]
        assert raw.shape == f["computed"].shape == (4, 3, 5)
        assert set(f["directions"]) == {"x", "y", "z"}
    for k in range(4):
        for j in range(3):
            for i in range(5):
                if (k, j, i) != (3, 2, 4):
                    assert raw[k, j, i] == 100 * x[i] + 10 * y[j] + z[k]
    surface = store.read_surface(path)
    assert surface.ndim == 3 and surface.z is not None
    assert surface.missing().tolist() == [spec.grid.n_points - 1]
    assert [d["fc.weight"][0, 0].item() for d in store.read_directions(path)] == [1.0, 2.0, 3.0]
    with pytest.raises(SpecError, match="volume"):
        write_html(surface, tmp_path / "v.html")


def test_a_volume_file_with_a_wrong_shape_is_refused(tmp_path: Path) -> None:
    path, _ = _volume_file(tmp_path / "v.h5")
    with h5py.File(path, "r+") as f:
        del f["train_loss"]
        f["train_loss"] = np.zeros((3, 5))
    with pytest.raises(SurfaceFileError, match=r"expected \(4, 3, 5\)"):
        store.read_surface(path)


def test_the_api_returns_nz_slices_of_ny_rows_and_downsamples_every_axis(tmp_path: Path) -> None:
    path, spec = _volume_file(tmp_path / "v.h5")
    x, y = store.grid_coordinates(spec.grid)
    flat = np.arange(spec.grid.n_points)
    coords = store.flat_coordinates(x, y, flat, store.z_coordinates(spec.grid))
    store.write_points(path, flat, {m: _f(coords) for m in spec.metric_names})
    record = SurfaceRecord(id="v", label="v", model="m", dataset="d", checkpoint_id="c", request={})
    surface = store.read_surface(path)

    full = surface_data(record, surface)
    assert full.ndim == 3 and full.grid.nz == 4 and full.z == [0.0, 1.0, 2.0, 3.0]
    values = np.array(full.values["train_loss"])
    assert values.shape == (4, 3, 5)
    assert values[2, 1, 4] == 100 * x[4] + 10 * y[1] + 2.0

    thin = surface_data(record, surface, max_points=3)
    assert len(thin.x) == 3 and thin.y == list(y) and thin.z == [0.0, 2.0, 3.0]
    thinned = np.array(thin.values["train_loss"])
    assert thinned.shape == (3, 3, 3)
    assert thinned[1, 2, 1] == 100 * thin.x[1] + 10 * thin.y[2] + thin.z[1]


def test_the_request_schema_takes_nz_and_counts_every_point() -> None:
    grid = GridRequest(nx=11, ny=11, nz=11)
    assert grid.dim == 3 and grid.zrange == grid.xrange and grid.points == 1331
    assert GridRequest(nx=5, ny=5, dim=3).nz == 5
    assert GridRequest(nx=5, ny=5).points == 25 and GridRequest(nx=5, ny=5).nz is None
    with pytest.raises(ValidationError, match="need dim 3"):
        GridRequest(nx=5, ny=5, dim=2, nz=4)
    with pytest.raises(ValidationError, match="zrange"):
        GridRequest(nx=5, ny=5, nz=4, zrange=(1.0, -1.0))


def _done(path: Path) -> int:
    try:
        return store.read_surface(path).done
    except SurfaceFileError:
        return 0  # not created yet


@pytest.mark.slow
def test_a_resnet20_volume_resumes_after_kill_9_and_equals_the_naive_loop(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    args_model = {"in_channels": 1, "num_classes": 10, "image_size": 8}
    checkpoint = save_checkpoint(
        tmp_path / "r20.pt",
        build("resnet20", **args_model),
        model_name="resnet20",
        model_args=args_model,
        metadata={},
    )  # untrained: the geometry, not the training, is under test
    out = tmp_path / "volume.h5"
    args = [
        "surface", "--checkpoint", str(checkpoint), "--dim", "3", "--grid", "11",
        "--range", "-1", "1", "--zrange", "-0.5", "0.5", "--train-size", "16", "--workers", "1",
        "--no-compile", "--device", "cpu", "--quiet", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", CLI, *args], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while _done(out) == 0:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "no points written in 180 s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _done(out)
    assert 0 < killed_at < 1331 and store.read_surface(out).status == "partial"

    rerun = subprocess.run(
        [sys.executable, "-c", CLI, *args], capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr
    surface = store.read_surface(out)
    assert surface.status == "complete" and surface.done == 1331 and surface.z is not None
    assert surface.values["train_loss"].shape == (11, 11, 11)
    np.testing.assert_allclose(surface.z, np.linspace(-0.5, 0.5, 11))

    rng = np.random.default_rng(0)
    flat = rng.choice(1331, size=6, replace=False)
    k, rest = np.divmod(flat, 121)
    j, i = np.divmod(rest, 11)
    coords = np.stack([surface.x[i], surface.y[j], surface.z[k]], axis=1)  # type: ignore[index]
    model, _ = load_checkpoint(str(checkpoint))
    data = {"train": load_data(surface.spec.data, "train")}
    naive = reference_evaluate(model, store.read_directions(out), coords, data)
    for metric in ("train_loss", "train_acc"):
        np.testing.assert_allclose(surface.values[metric][k, j, i], naive[metric], rtol=1e-5)

    info = subprocess.run(
        [sys.executable, "-c", CLI, "info", str(out)], capture_output=True, text=True, timeout=60
    )
    assert info.returncode == 0 and "3D 11×11×11" in info.stdout, info.stdout
