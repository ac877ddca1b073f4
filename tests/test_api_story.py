"""The skip-vs-plain story over REST, in-process on tiny models: Hessian-eigenvector surfaces,
gradient-flow jobs stored with their surface, and reproduction reports (JSON and offline HTML)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from api.worker import Worker
from tests.test_api import TINY, tiny_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return tiny_settings(tmp_path / "data")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def run_all(client: TestClient) -> None:
    state = client.app.state  # type: ignore[attr-defined]
    worker = Worker(state.queue, state.settings, state.sessions)
    while worker.run_once():
        pass


def _surface(client: TestClient, **changes: Any) -> str:
    response = client.post("/api/surfaces", json={**TINY, **changes})
    assert response.status_code == 202, response.text
    run_all(client)
    job = client.get(f"/api/jobs/{response.json()['job']['id']}").json()
    assert job["status"] == "done", job["error"]
    return str(job["surface_id"])


def test_hessian_directions_surface(client: TestClient) -> None:
    directions = {"kind": "hessian", "normalization": "filter", "ignore": "biasbn", "seed": 0}
    surface_id = _surface(client, directions=directions)
    data = client.get(f"/api/surfaces/{surface_id}").json()
    recorded = data["provenance"]["directions"]
    assert recorded["kind"] == "hessian"
    eigenvalues = recorded["eigenvalues"]
    assert len(eigenvalues) == 2 and eigenvalues[0] >= eigenvalues[1]
    assert np.isfinite(np.asarray(data["values"]["train_loss"], dtype=float)).all()
    refused = client.post("/api/surfaces", json={**TINY, "directions": {"kind": "eigen"}})
    assert refused.status_code == 422 and "hessian" in refused.text
