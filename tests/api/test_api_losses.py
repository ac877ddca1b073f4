"""``GET /api/losses`` and a surface request's ``loss``: registered names only, end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from landscape.storage import read_surface
from tests.api.test_api import TINY, run_all, tiny_settings


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(tiny_settings(tmp_path / "data"))) as test_client:
        yield test_client


def test_losses_lists_builtins_and_the_plugin(client: TestClient) -> None:
    reply = client.get("/api/losses")
    assert reply.status_code == 200
    by_name = {loss["name"]: loss for loss in reply.json()}
    for name in ("cross_entropy", "mse", "mse_onehot", "label_smoothing_0.1"):
        assert by_name[name]["source"] == "builtin" and by_name[name]["formula"]
    assert by_name["toy-hinge-l1"]["source"].startswith("plugin landscape-toy-plugin")
    assert "hinge" in by_name["toy-hinge-l1"]["formula"]


@pytest.mark.slow
def test_surface_with_a_plugin_loss_is_computed_with_it(client: TestClient, tmp_path: Path) -> None:
    reply = client.post("/api/surfaces", json={**TINY, "loss": "toy-hinge-l1"})
    assert reply.status_code == 202, reply.text
    job_id = reply.json()["job"]["id"]
    run_all(client)
    job = client.get(f"/api/jobs/{job_id}").json()
    assert job["status"] == "done", job["error"]
    surface = client.get(f"/api/surfaces/{job['surface_id']}").json()
    assert surface["status"] == "complete"
    files = list((tmp_path / "data").rglob("*.h5"))
    assert [read_surface(p).spec.loss for p in files] == ["toy-hinge-l1"]


@pytest.mark.parametrize("loss", ["hinge", "python:evil.module.fn@0123456789ab"])
def test_unknown_or_python_loss_is_a_422_with_a_message(client: TestClient, loss: str) -> None:
    reply = client.post("/api/surfaces", json={**TINY, "loss": loss})
    assert reply.status_code == 422
    assert reply.headers["content-type"].startswith("application/json")
    assert loss in reply.text and "loss" in reply.text


@pytest.mark.slow
def test_a_trained_model_learns_the_surface_loss_unless_the_recipe_names_one(
    client: TestClient,
) -> None:
    """``loss`` trains the net too (Cohen et al.'s MSE nets are trained with MSE); the
    recipe's own ``loss`` overrides it, and each recipe is its own checkpoint."""
    small = {**TINY, "grid": {"nx": 3, "dim": 1}}
    bodies = [
        {**small, "loss": "mse_onehot"},
        {**small, "loss": "mse_onehot", "train": {"epochs": 1, "loss": "cross_entropy"}},
    ]
    jobs = [client.post("/api/surfaces", json=body).json()["job"] for body in bodies]
    run_all(client)
    trained = []
    for job in jobs:
        job = client.get(f"/api/jobs/{job['id']}").json()
        assert job["status"] == "done", job["error"]
        surface = client.get(f"/api/surfaces/{job['surface_id']}").json()
        trained.append(surface["provenance"]["train"]["loss"])
    assert trained == ["mse_onehot", "cross_entropy"]
    checkpoints = client.get("/api/checkpoints").json()
    assert len({c["id"] for c in checkpoints if c["source"] == "trained"}) == 2


def test_a_recipe_loss_must_be_registered(client: TestClient) -> None:
    reply = client.post("/api/surfaces", json={**TINY, "train": {"epochs": 1, "loss": "hinge"}})
    assert reply.status_code == 422 and "hinge" in reply.text
