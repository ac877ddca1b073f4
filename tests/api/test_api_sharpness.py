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
