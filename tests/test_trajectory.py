"""Training trajectories on PCA surfaces (Li et al. 2018, §7): file, plot, CLI and API.

The stored path is checked against an independent projection (least squares of
``snapshot − final`` onto the stored directions), so it is in the grid's own units.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from landscape import storage as store
from landscape.cli import main as cli_main
from landscape.plot.figures import surface_figure
from landscape.sources.checkpoint import load_checkpoint
from landscape.specs import DataSpec, DirectionSpec, EngineOptions, GridSpec, SurfaceSpec, TrainSpec
from landscape.surface import compute_surface
from landscape.train import snapshot_dir, train_model
from tests.api.test_api import TINY, _state_dict_bytes, _upload, run_all

FAST = EngineOptions(device="cpu", workers=1, compile=False)
EPOCHS = 3
DATA = DataSpec(train_size=200, test_size=50)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A tiny MLP trained for a few epochs with a snapshot after each (and at the start)."""
    out = tmp_path_factory.mktemp("traj") / "mlp.pt"
    spec = TrainSpec(
        model="mlp-plain",
        data=DATA,
        model_args={"depth": 2, "width": 16},
        epochs=EPOCHS,
        batch_size=32,
        device="cpu",
        snapshot_every=1,
    )
    train_model(spec, out)
    return out, sorted(snapshot_dir(out).glob("epoch_*.pt"))


@pytest.fixture(scope="module")
def pca_surface(trained: tuple[Path, list[Path]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    checkpoint, snapshots = trained
    spec = SurfaceSpec(
        checkpoint=str(checkpoint),
        data=DATA,
        grid=GridSpec(x_range=(-2.0, 2.0), n_x=5, y_range=(-2.0, 2.0), n_y=5),
        directions=DirectionSpec(kind="pca", trajectory=tuple(str(p) for p in snapshots)),
    )
    return compute_surface(spec, tmp_path_factory.mktemp("surf") / "pca.h5", options=FAST)


def _flat(params: dict[str, torch.Tensor], names: list[str]) -> np.ndarray:
    return np.concatenate([params[n].detach().double().numpy().ravel() for n in names])


def test_trajectory_group_matches_an_independent_projection(
    trained: tuple[Path, list[Path]], pca_surface: Path
) -> None:
    checkpoint, snapshots = trained
    assert len(snapshots) == EPOCHS + 1
    surface = store.read_surface(pca_surface)
    trajectory = surface.trajectory
    assert trajectory is not None and surface.status == "complete"
    assert trajectory.coords.shape == (EPOCHS + 1, 2)
    assert list(trajectory.epochs) == list(range(EPOCHS + 1))
    assert trajectory.names == tuple(p.name for p in snapshots)
    ratio = trajectory.explained_variance_ratio
    assert len(ratio) == 2 and 0 < ratio[1] <= ratio[0] <= 1

    # Independent: least squares of (snapshot − final) onto the stored δ, η, which are the
    # very directions of the grid θ + x·δ + y·η.
    final, _ = load_checkpoint(checkpoint)
    names = [n for n, _ in final.named_parameters()]
    theta = _flat(dict(final.named_parameters()), names)
    directions = store.read_directions(pca_surface)
    basis = np.stack([_flat(d, names) for d in directions], axis=1)  # (n_params, 2)
    for k, path in enumerate(snapshots):
        snapshot, _ = load_checkpoint(path)
        diff = _flat(dict(snapshot.named_parameters()), names) - theta
        expected, *_ = np.linalg.lstsq(basis, diff, rcond=None)
        np.testing.assert_allclose(trajectory.coords[k], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(trajectory.coords[-1], [0.0, 0.0], atol=1e-6)  # last = final

    with h5py.File(pca_surface, "r") as f:  # conventions of docs/format.md
        group = f["trajectory"]
        assert group.attrs["encoding-type"] == "trajectory"
        assert group.attrs["encoding-version"] == "1"
        np.testing.assert_allclose(group.attrs["explained_variance_ratio"], ratio)
    assert store.describe(store.read_surface(pca_surface)).has_trajectory is True


def test_random_surfaces_have_no_trajectory(
    trained: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    spec = SurfaceSpec(checkpoint=str(trained[0]), data=DATA, grid=GridSpec(n_x=3, n_y=3))
    out = compute_surface(spec, tmp_path / "random.h5", options=FAST)
    assert store.read_surface(out).trajectory is None
    assert store.describe(store.read_surface(out)).has_trajectory is False
    figure = surface_figure(store.read_surface(out))
    assert not [t for t in figure.data if t.name == "trajectory"]


def test_plot_draws_the_path_and_explained_variance(pca_surface: Path) -> None:
    surface = store.read_surface(pca_surface)
    figure = surface_figure(surface)
    paths = [t for t in figure.data if t.name == "trajectory"]
    assert {t.type for t in paths} == {"scatter", "scatter3d"}
    contour_path = next(t for t in paths if t.type == "scatter")
    assert "markers" in contour_path.mode and len(contour_path.x) == EPOCHS + 1
    pc1 = 100 * surface.trajectory.explained_variance_ratio[0]  # type: ignore[union-attr]
    assert figure.layout.xaxis.title.text == f"PC1 ({pc1:.1f} %)"
    assert figure.layout.scene.yaxis.title.text.startswith("PC2 (")


def test_cli_train_snapshots_feed_a_pca_surface(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = tmp_path / "m.pt"
    common = ["--dataset", "digits", "--train-size", "100"]
    assert cli_main(["train", "--model", "mlp-plain", "--epochs", "2", "--snapshot-every", "1",
                     "--out", str(checkpoint), *common]) == 0  # fmt: skip
    snapshots = sorted(str(p) for p in (tmp_path / "m.snapshots").glob("*.pt"))
    out = tmp_path / "s.h5"
    assert cli_main(["surface", "--checkpoint", str(checkpoint), "--directions", "pca",
                     "--trajectory", *snapshots, "--grid", "3", "--range", "auto",
                     "--out", str(out), "--device", "cpu", "--workers", "1", "--no-compile",
                     "--quiet", *common]) == 0  # fmt: skip
    surface = store.read_surface(out)
    assert surface.trajectory is not None and len(surface.trajectory.coords) == 3
    # --range auto: the whole path inside the grid, with a margin
    coords = surface.trajectory.coords
    assert surface.x[0] < coords[:, 0].min() and coords[:, 0].max() < surface.x[-1]
    assert surface.y is not None
    assert surface.y[0] < coords[:, 1].min() and coords[:, 1].max() < surface.y[-1]


# --------------------------------------------------------------------------- API


@pytest.fixture
def client(tmp_path: Path) -> Any:
    from api.app import create_app
    from tests.api.test_api import tiny_settings

    with TestClient(create_app(tiny_settings(tmp_path / "data"))) as test_client:
        yield test_client


def test_api_pca_surface_has_the_trajectory(client: TestClient) -> None:
    body = {**TINY, "train": {"epochs": 2}, "directions": {"kind": "pca"}}
    created = client.post("/api/surfaces", json=body)
    assert created.status_code == 202, created.text
    job_id, surface_id = created.json()["job"]["id"], created.json()["job"]["surface_id"]
    run_all(client)
    job = client.get(f"/api/jobs/{job_id}").json()
    assert job["status"] == "done", job["error"]
    data = client.get(f"/api/surfaces/{surface_id}").json()
    trajectory = data["trajectory"]
    assert trajectory["epochs"] == [0, 1, 2]
    assert len(trajectory["x"]) == len(trajectory["y"]) == 3
    assert len(trajectory["explained_variance"]) == 2
    assert trajectory["x"][-1] == pytest.approx(0.0, abs=1e-6)

    random = client.post("/api/surfaces", json=TINY)  # the default stays random
    run_all(client)
    other = client.get(f"/api/surfaces/{random.json()['job']['surface_id']}").json()
    assert other["trajectory"] is None


def test_api_pca_needs_a_trained_model(client: TestClient) -> None:
    checkpoint = _upload(client, "mine.pt", _state_dict_bytes()).json()["id"]
    body = {"checkpoint": checkpoint, "directions": {"kind": "pca"}, "grid": {"nx": 3}}
    response = client.post("/api/surfaces", json=body)
    assert response.status_code == 422
    message = response.json()["detail"][0]["msg"]
    assert "pca" in message and "uploaded checkpoint" in message

    short = {**TINY, "train": {"epochs": 1}, "directions": {"kind": "pca"}}
    response = client.post("/api/surfaces", json=short)
    assert response.status_code == 422 and "epochs >= 2" in response.json()["detail"][0]["msg"]
