"""A Hessian analysis cancelled while its one long step runs ends ``cancelled``, not ``done``,
and a real ARPACK spectrum costs no more products than its estimate counted.

The cancel is the real path: ``DELETE /api/jobs/{id}`` sets the flag, the worker's heartbeat
sees it and the runner's ``should_stop`` turns true, while the worker thread is inside a
Hutchinson trace of 100 000 products (minutes, were it not stopped).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from api.app import create_app
from api.planning.cost import arpack_products
from tests.api.test_api import tiny_settings, worker_for
from tests.api.test_api_hessian import computed_surface


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """The products are small: on a busy 2-core box intra-op threads only contend (a product
    of the TINY net takes 0.9 s with two threads against 0.015 s with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_cancel_during_the_spectrum_ends_cancelled(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path / "data", max_trace_samples=100_000, lease_seconds=1.0)
    with TestClient(create_app(settings)) as client:
        surface_id = computed_surface(client)
        url = f"/api/surfaces/{surface_id}/hessian"
        body = {"top": 1, "bottom": 0, "trace": True, "trace_samples": 100_000}
        reply = client.post(url, json=body)
        assert reply.status_code == 202, reply.text
        job_id = reply.json()["job"]["id"]
        assert reply.json()["job"]["progress"]["total"] == 1  # one step: the spectrum

        worker = worker_for(client)
        thread = threading.Thread(target=worker.run_once)
        thread.start()
        deadline = time.monotonic() + 30
        while client.get(f"/api/jobs/{job_id}").json()["status"] != "running":
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        time.sleep(0.5)  # into the products (their first report, 0 of 1, is long gone)
        cancelled_at = time.monotonic()
        client.delete(f"/api/jobs/{job_id}")
        thread.join(timeout=30)
        assert not thread.is_alive(), "the analysis kept running after its cancel"
        stopped_in = time.monotonic() - cancelled_at
        job = client.get(f"/api/jobs/{job_id}").json()
        assert job["status"] == "cancelled", job
        assert job["progress"]["done"] == 0 and stopped_in < 10
        assert client.get(url).status_code == 404  # nothing stored


def test_ten_bottom_eigenvalues_cost_at_most_their_estimate(tmp_path: Path) -> None:
    """The TINY net's ten smallest eigenvalues by ARPACK: the stored product count is within
    the products ``api.planning.cost`` prices the job at (the library's cap)."""
    with TestClient(create_app(tiny_settings(tmp_path / "data"))) as client:
        surface_id = computed_surface(client)
        url = f"/api/surfaces/{surface_id}/hessian"
        job = client.post(url, json={"top": 0, "bottom": 10}).json()["job"]
        worker = worker_for(client)
        while worker.run_once():
            pass
        done = client.get(f"/api/jobs/{job['id']}").json()
        assert done["status"] == "done", done
        hessian = client.get(url).json()
        assert len(hessian["bottom_eigenvalues"]) == 10
        assert 0 < hessian["matvecs"] <= arpack_products(10)
