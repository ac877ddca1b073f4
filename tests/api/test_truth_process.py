"""Against a real ``landscape serve``: a client at its limit gets none of twelve sharpness
jobs queued (each is the 429 every other kind gets), and an ONNX graph of a few kilobytes
that asks for millions of FLOPs per sample is refused over the FLOPs budget on a large grid
instead of being admitted by its file's size."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.test_api import TINY
from tests.server_support import ServeProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServeProcess]:
    env = {
        **os.environ,
        "LANDSCAPE_WORKERS": "0",
        "LANDSCAPE_DEVICE": "cpu",
        "LANDSCAPE_MAX_ACTIVE_JOBS_PER_CLIENT": "2",
        "LANDSCAPE_MAX_GRID_POINTS": str(201 * 201),
    }
    started = ServeProcess(tmp_path, env)
    yield started
    started.stop()


def test_sharpness_jobs_are_inside_the_per_client_limit(server: ServeProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for size in (100, 110):
            queued = client.post("/api/surfaces", json={**TINY, "train_size": size})
            assert queued.status_code == 202, queued.text
        refused = [
            client.post(f"/api/surfaces/{'a' * 19}{i % 10}/sharpness", json={}) for i in range(12)
        ]
        assert [r.status_code for r in refused] == [429] * 12, refused[0].text
        assert all("limit 2 per client" in r.json()["detail"] for r in refused)
        assert len([j for j in client.get("/api/jobs").json() if j["kind"] == "sharpness"]) == 0


def test_a_small_onnx_graph_of_heavy_products_is_priced_by_its_work(
    server: ServeProcess, tmp_path: Path
) -> None:
    pytest.importorskip("onnx2torch")
    pytest.importorskip("onnxruntime")
    from tests.api.test_pricing_truth import matmul_chain

    path = matmul_chain(tmp_path / "chain.onnx")
    with httpx.Client(base_url=server.url, timeout=120) as client, path.open("rb") as handle:
        files = {"file": (path.name, handle, "application/octet-stream")}
        uploaded = client.post("/api/checkpoints", files=files, data={"dataset": "digits"})
        assert uploaded.status_code == 201, uploaded.text
        body = {"checkpoint": uploaded.json()["id"], "grid": {"nx": 201, "ny": 201}}
        refused = client.post("/api/surfaces", json=body)
        assert refused.status_code == 422, refused.text
        assert "LANDSCAPE_MAX_JOB_FLOPS" in refused.json()["detail"]
