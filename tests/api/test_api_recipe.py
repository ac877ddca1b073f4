"""Recipes through the API: ``GET /api/surfaces/{id}/recipe`` downloads what made a surface,
and ``POST /api/surfaces`` with ``{"recipe": ...}`` computes it again on this server's copy of
the checkpoint, or names every difference."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from api.app import create_app
from landscape.models import build
from landscape.recipe import recipe_of
from landscape.sources.checkpoint import save_checkpoint
from landscape.specs import DataSpec, EngineOptions, GridSpec, SurfaceSpec
from landscape.surface import compute_surface
from tests.api.test_api import run_all, tiny_settings
from tests.cli_support import MODEL_ARGS, tiny_mlp_checkpoint


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(tiny_settings(tmp_path / "data"))) as test_client:
        yield test_client


def _upload(client: TestClient, path: Path) -> str:
    files = {"file": (path.name, path.read_bytes(), "application/octet-stream")}
    reply = client.post("/api/checkpoints", files=files, data={"dataset": "digits"})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


def _values(client: TestClient, surface_id: str) -> dict[str, np.ndarray]:
    data = client.get(f"/api/surfaces/{surface_id}").json()
    return {m: np.array(v, dtype=float) for m, v in data["values"].items()}


def test_recipe_download_then_post_rebuilds_the_surface(client: TestClient, tmp_path: Path) -> None:
    checkpoint = _upload(client, tiny_mlp_checkpoint(tmp_path))
    body = {"checkpoint": checkpoint, "grid": {"nx": 3, "ny": 3}, "train_size": 100}
    body["directions"] = {"seed": 2}
    surface_id = client.post("/api/surfaces", json=body).json()["job"]["surface_id"]
    run_all(client)
    before = _values(client, surface_id)

    reply = client.get(f"/api/surfaces/{surface_id}/recipe")
    assert reply.status_code == 200, reply.text
    assert f'filename="surface-{surface_id}.recipe.json"' in reply.headers["content-disposition"]
    recipe = reply.json()
    assert recipe["format"] == "landscape-recipe" and recipe["checkpoint"]["id"] == checkpoint
    assert recipe["spec"]["grid"]["n_x"] == 3 and recipe["spec"]["data"]["train_size"] == 100
    assert recipe["spec"]["directions"]["seed"] == 2 and recipe["model"]["name"] == "mlp-plain"
    assert client.get("/api/surfaces/0123456789abcdef0123/recipe").status_code == 404

    assert client.delete(f"/api/surfaces/{surface_id}").status_code == 204
    again = client.post("/api/surfaces", json={"recipe": recipe, "label": "rebuilt"})
    assert again.status_code == 202, again.text
    assert again.json()["job"]["surface_id"] == surface_id and again.json()["differences"] == []
    run_all(client)
    for metric, values in _values(client, surface_id).items():
        np.testing.assert_allclose(values, before[metric], rtol=0, atol=1e-6)
    listed = client.get("/api/surfaces").json()
    assert [s["label"] for s in listed] == ["rebuilt"]


@pytest.fixture
def cli_recipe(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A surface made as ``landscape surface`` makes it, away from any server, and its recipe."""
    checkpoint = tiny_mlp_checkpoint(tmp_path)
    spec = SurfaceSpec(
        checkpoint=str(checkpoint),
        data=DataSpec(train_size=48),
        grid=GridSpec(n_x=3, n_y=3),
    )
    options = EngineOptions(device="cpu", workers=1, compile=False)
    out = compute_surface(spec, tmp_path / "cli.h5", options=options)
    return checkpoint, recipe_of(out)


def test_a_cli_recipe_finds_the_uploaded_checkpoint_or_names_differences(
    client: TestClient, tmp_path: Path, cli_recipe: tuple[Path, dict[str, Any]]
) -> None:
    checkpoint, recipe = cli_recipe
    unknown = client.post("/api/surfaces", json={"recipe": recipe})
    assert unknown.status_code == 422 and "not on this server" in unknown.json()["detail"]

    torch.manual_seed(5)
    other = save_checkpoint(
        tmp_path / "other.pt", build("mlp-plain", **MODEL_ARGS), model_name="mlp-plain",
        model_args=MODEL_ARGS, metadata={},
    )  # fmt: skip
    other_id = _upload(client, other)
    named = client.post("/api/surfaces", json={"recipe": recipe, "checkpoint": other_id})
    assert named.status_code == 422, named.text
    assert "checkpoint bytes (sha256)" in named.json()["detail"]
    allowed = {"recipe": recipe, "checkpoint": other_id, "allow_differences": True}
    reply = client.post("/api/surfaces", json=allowed)
    assert reply.status_code == 202 and "checkpoint bytes" in reply.json()["differences"][0]

    assert _upload(client, checkpoint) == recipe["checkpoint"]["sha256"]
    older = {**recipe, "versions": {**recipe["versions"], "numpy": "1.0"}}
    created = client.post("/api/surfaces", json={"recipe": older})
    assert created.status_code == 202, created.text
    assert created.json()["differences"] == [f"numpy version: recipe 1.0, here {np.__version__}"]
    job = client.get(f"/api/jobs/{created.json()['job']['id']}").json()
    # an upload's id is its bytes' sha256, as the CLI's key uses: the same surface id
    assert job["surface_id"] == recipe["surface"]["key"]
    assert "recipe" not in job["request"] and job["request"]["train_size"] == 48

    beside = client.post("/api/surfaces", json={"recipe": recipe, "grid": {"nx": 5}})
    assert beside.status_code == 422 and "grid cannot go with 'recipe'" in json.dumps(
        beside.json()["detail"]
    )
    future = client.post("/api/surfaces", json={"recipe": {**recipe, "version": 9}})
    assert future.status_code == 422 and "recipe version 9" in json.dumps(future.json())


@pytest.mark.parametrize(
    ("recipe", "words"),
    [
        ("x", "not a recipe"),
        ({"format": "landscape-recipe", "version": 1, "spec": {}, "checkpoint": []}, "object"),
        ({"format": "landscape-recipe", "version": 1, "spec": {"grid": 3}, "checkpoint": {}},
         "malformed"),
        ({"format": "landscape-recipe", "version": 1, "spec": {"splits": "train"},
          "checkpoint": {}}, "unknown split"),
        ({"format": "landscape-recipe", "version": 1, "spec": {}, "checkpoint": {},
          "estimate": {"target": 2}}, "estimate target"),
        ({"format": "landscape-recipe", "version": 1, "checkpoint": {},
          "spec": {"directions": {"kind": "interpolate", "target_checkpoint": "t.pt"}}},
         "interpolation"),
    ],
)  # fmt: skip
def test_malformed_recipes_are_422s_naming_the_fault(
    client: TestClient, recipe: Any, words: str
) -> None:
    reply = client.post("/api/surfaces", json={"recipe": recipe, "checkpoint": "ab" * 32})
    assert reply.status_code == 422, reply.text
    assert words in json.dumps(reply.json()["detail"])
