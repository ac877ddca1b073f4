"""Sharpness jobs over REST, in-process: λmax of a surface's checkpoint stored in its file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from api.worker import Worker
from tests.api.test_api import TINY, tiny_settings


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings: Settings = tiny_settings(tmp_path / "data")
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def run_all(client: TestClient) -> None:
    state = client.app.state  # type: ignore[attr-defined]
    worker = Worker(state.queue, state.settings, state.sessions)
    while worker.run_once():
        pass


def test_sharpness_job_stores_lambda_max(client: TestClient) -> None:
    created = client.post("/api/surfaces", json=TINY)
    assert created.status_code == 202, created.text
    run_all(client)
    surface_id = client.get(f"/api/jobs/{created.json()['job']['id']}").json()["surface_id"]
    assert client.get(f"/api/surfaces/{surface_id}/sharpness").status_code == 404
    queued = client.post(f"/api/surfaces/{surface_id}/sharpness", json={})
    assert queued.status_code == 202, queued.text
    job = queued.json()["job"]
    assert job["kind"] == "sharpness"
    run_all(client)
    done = client.get(f"/api/jobs/{job['id']}").json()
    assert done["status"] == "done", done["error"]
    stored = client.get(f"/api/surfaces/{surface_id}/sharpness").json()
    assert len(stored["points"]) == 1  # no snapshots kept: the checkpoint itself
    assert stored["points"][0]["lambda_max"] > 0 and stored["loss"] == "cross_entropy"
    again = client.post(f"/api/surfaces/{surface_id}/sharpness", json={})
    assert again.status_code == 200 and again.json()["sharpness"] == stored
    bad = client.post(f"/api/surfaces/{surface_id}/sharpness", json={"train_size": 0})
    assert bad.status_code == 422


def test_more_snapshots_than_a_job_measures_are_spread_over_the_run(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 5-epoch PCA surface keeps 6 snapshots; with a limit of 3 per job the points are the
    first, middle and last epochs, and the reply says it sampled them."""
    from api.planning import sharpness as planning

    monkeypatch.setattr(planning, "MAX_SNAPSHOTS", 3)
    body = {**TINY, "train": {"epochs": 5}, "directions": {"kind": "pca"}}
    created = client.post("/api/surfaces", json=body)
    assert created.status_code == 202, created.text
    run_all(client)
    surface_id = created.json()["job"]["surface_id"]
    assert client.post(f"/api/surfaces/{surface_id}/sharpness", json={}).status_code == 202
    run_all(client)
    stored = client.get(f"/api/surfaces/{surface_id}/sharpness").json()
    assert [p["step"] for p in stored["points"]] == [0, 2, 5]  # not the first three
    assert stored["snapshots_kept"] == 6 and stored["sampled"] is True


def test_snapshot_sampling_keeps_the_ends_in_step_order() -> None:
    from landscape.analysis.sharpness import sample_snapshots

    paths = [Path(f"epoch_{i:03d}.pt") for i in range(1001)]  # epoch_1000 sorts first by name
    picked = sample_snapshots(list(reversed(paths)), 5)
    assert [p.name for p in picked] == [
        "epoch_000.pt", "epoch_250.pt", "epoch_500.pt", "epoch_750.pt", "epoch_1000.pt",
    ]  # fmt: skip
    assert sample_snapshots(paths[:4], 10) == paths[:4]
