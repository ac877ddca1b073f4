"""A diverged training, or a checkpoint already diverged, ends its job ``failed`` with what
happened and what to change, not ``done`` with a surface of NaN."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from api.app import create_app
from landscape.models import build
from tests.api.test_api import DIGITS_SHAPE, TINY, run_all, tiny_settings


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(tiny_settings(tmp_path / "data"))) as test_client:
        yield test_client


def _finished(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    created = client.post("/api/surfaces", json=body)
    assert created.status_code == 202, created.text
    run_all(client)
    job: dict[str, Any] = client.get(f"/api/jobs/{created.json()['job']['id']}").json()
    return job


def test_a_diverging_training_fails_the_job_naming_the_learning_rate(client: TestClient) -> None:
    body = {**TINY, "train": {"epochs": 1, "lr": 100, "loss": "mse_onehot"}}
    job = _finished(client, body)
    assert job["status"] == "failed", job
    assert "training diverged in epoch 1 of 1" in job["error"]
    assert "lower the learning rate (now 100)" in job["error"]
    assert client.get("/api/checkpoints").json() == []  # nothing diverged is offered for reuse


def test_a_nan_checkpoint_fails_its_surface_job(client: TestClient) -> None:
    model = build("mlp-plain", **DIGITS_SHAPE)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    uploaded = client.post(
        "/api/checkpoints",
        files={"file": ("nan.pt", buffer.getvalue(), "application/octet-stream")},
        data={"model": "mlp-plain", "dataset": "digits"},
    )
    assert uploaded.status_code == 201, uploaded.text
    body = {"checkpoint": uploaded.json()["id"], "grid": {"nx": 3, "ny": 3}, "train_size": 100}
    job = _finished(client, body)
    assert job["status"] == "failed", job
    assert "train_loss is nan at every point" in job["error"]
    assert "the model has diverged" in job["error"]
    surface = client.get(f"/api/surfaces/{job['surface_id']}").json()
    # Partial, not complete: the page follows the failed job and shows its error, and the
    # same request is not answered from the cache with a blank surface.
    assert surface["status"] == "partial" and surface["nonfinite"] == surface["total"] == 9
    assert client.post("/api/surfaces", json=body).status_code == 202
