"""A surface request's ``directions.params``: a parameter subset end to end through the API,
its own surface id, and a 422 naming the pattern that matches nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from landscape.storage import read_directions
from tests.api.test_api import TINY, run_all, tiny_settings

SMALL: dict[str, Any] = {**TINY, "grid": {"nx": 3, "ny": 3, "xrange": [-1, 1], "yrange": [-1, 1]}}


def _with_params(*patterns: str) -> dict[str, Any]:
    return {**SMALL, "directions": {**SMALL["directions"], "params": list(patterns)}}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(tiny_settings(tmp_path / "data"))) as test_client:
        yield test_client


def test_subset_surface_end_to_end(client: TestClient, tmp_path: Path) -> None:
    reply = client.post("/api/surfaces", json=_with_params("head.*"))
    assert reply.status_code == 202, reply.text
    job_id, surface_id = reply.json()["job"]["id"], reply.json()["job"]["surface_id"]
    plain = client.post("/api/surfaces", json=SMALL)
    assert plain.status_code == 202 and plain.json()["job"]["surface_id"] != surface_id
    other = client.post("/api/surfaces", json=_with_params("stem.*"))
    assert other.json()["job"]["surface_id"] not in (surface_id, plain.json()["job"]["surface_id"])
    client.delete(f"/api/jobs/{plain.json()['job']['id']}")
    client.delete(f"/api/jobs/{other.json()['job']['id']}")
    run_all(client)

    job = client.get(f"/api/jobs/{job_id}").json()
    assert job["status"] == "done", job["error"]
    summary = client.get(f"/api/surfaces/{surface_id}").json()
    assert summary["provenance"]["directions"]["params"] == ["head.*"]
    path = tmp_path / "s.h5"
    path.write_bytes(client.get(f"/api/surfaces/{surface_id}/file").content)
    for direction in read_directions(path):
        moved = {name for name, d in direction.items() if bool(d.any())}
        assert moved == {"head.weight"}  # head.bias: ignore biasbn


def test_unmatched_pattern_is_a_422_naming_it(client: TestClient) -> None:
    reply = client.post("/api/surfaces", json=_with_params("head.*", "layer3.*"))
    assert reply.status_code == 422, reply.text
    detail = str(reply.json()["detail"])
    assert "'layer3.*' matches no parameter" in detail and "head.weight" in detail
    for bad in (["head.*,stem.*"], [""], ["head.*", "head.*"]):
        reply = client.post("/api/surfaces", json=_with_params(*bad))
        assert reply.status_code == 422 and "params" in str(reply.json()["detail"]), bad
    assert client.get("/api/surfaces").json() == []  # nothing was queued or computed
