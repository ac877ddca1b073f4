"""Every POST that queues a job is inside the queue limits: at a client's limit, or with the
queue full, each kind is refused with the same 429 — found from the API's own description of
its routes (a 202 answer queues a job), so a kind added later cannot slip past them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.api.test_api import TINY, tiny_settings

SURFACE_ID = "a" * 20  # no such surface: a request within the limits is a 404


def _queueing_posts(client: TestClient) -> list[str]:
    paths: dict[str, Any] = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    return sorted(
        path.replace("{surface_id}", SURFACE_ID)
        for path, operations in paths.items()
        if "202" in operations.get("post", {}).get("responses", {})
    )


@pytest.fixture
def at_client_limit(tmp_path: Path) -> Iterator[TestClient]:
    settings = tiny_settings(tmp_path / "data", max_active_jobs_per_client=1, max_active_jobs=100)
    with TestClient(create_app(settings)) as client:
        assert client.post("/api/surfaces", json=TINY).status_code == 202
        yield client


def test_every_kind_is_refused_at_the_per_client_limit(at_client_limit: TestClient) -> None:
    posts = _queueing_posts(at_client_limit)
    assert f"/api/surfaces/{SURFACE_ID}/sharpness" in posts and len(posts) >= 5
    for path in posts:
        reply = at_client_limit.post(path, json={})
        assert reply.status_code == 429, (path, reply.status_code, reply.text)
        assert "limit 1 per client" in reply.json()["detail"], path
        assert reply.headers["retry-after"]


def test_a_sharpness_job_is_refused_while_the_queue_is_full(tmp_path: Path) -> None:
    from tests.api.test_api import run_all

    settings = tiny_settings(tmp_path / "data", max_active_jobs_per_client=100, max_active_jobs=2)
    with TestClient(create_app(settings)) as client:
        surface_id = client.post("/api/surfaces", json=TINY).json()["job"]["surface_id"]
        run_all(client)
        for size in (150, 160):
            assert client.post("/api/surfaces", json={**TINY, "train_size": size}).is_success
        full = client.post(f"/api/surfaces/{surface_id}/sharpness", json={})
        assert full.status_code == 429, full.text
        assert "queue is full (2 queued or running, limit 2)" in full.json()["detail"]
