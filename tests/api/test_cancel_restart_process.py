"""Cancelling against a real ``landscape serve`` with a job worker: a request posted right after
a ``DELETE`` gets a job of its own instead of the one winding down, and a job cancelled just
before the server is killed ends cancelled when it restarts on the same store (not queued
forever, holding its surface) — so the surface can be deleted and requested again."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_api import TINY
from tests.api.test_api_process import wait_for
from tests.server_support import ServeProcess

pytestmark = pytest.mark.slow

# Trains for a while (many epochs) so it is still running when cancelled; each test cancels it.
# At the default learning rate (0.1) this small split diverges within a second or two, and a
# diverged job ends failed before the cancel is seen.
LONG = {**TINY, "train": {"epochs": 300, "lr": 0.01}}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDSCAPE_")}
    env.update(
        LANDSCAPE_WORKERS="1",
        LANDSCAPE_EXPRESS_WORKERS="0",
        LANDSCAPE_DEVICE="cpu",
        LANDSCAPE_ENGINE_WORKERS="1",
        LANDSCAPE_ENGINE_COMPILE="false",
        LANDSCAPE_CANCEL_WAIT_SECONDS="0",  # DELETE answers while the job still runs
        LANDSCAPE_LEASE_SECONDS="60",  # heartbeats (which see a cancel) every 2 s
        LANDSCAPE_POLL_SECONDS="0.2",
    )
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    started = ServeProcess(tmp_path_factory.mktemp("cancel"), _env())
    yield started
    started.stop()


def _job(client: httpx.Client, job_id: str) -> Any:
    return client.get(f"/api/jobs/{job_id}").json()


def _start_running(client: httpx.Client, size: int) -> str:
    queued = client.post("/api/surfaces", json={**LONG, "train_size": size})
    assert queued.status_code == 202, queued.text
    job_id: str = queued.json()["job"]["id"]
    wait_for(lambda: _job(client, job_id)["status"] == "running", 60, "the job to start")
    return job_id


def _cancel(client: httpx.Client, job_id: str) -> None:
    client.delete(f"/api/jobs/{job_id}")
    wait_for(lambda: _job(client, job_id)["status"] == "cancelled", 30, "the cancel")


def test_a_request_right_after_a_cancel_gets_a_job_of_its_own(server: ServeProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        dying = _start_running(client, 300)
        stopping = client.delete(f"/api/jobs/{dying}").json()
        assert stopping["status"] == "running" and stopping["cancel_requested"]
        again = client.post("/api/surfaces", json={**LONG, "train_size": 300})
        assert again.status_code == 202, again.text
        job = again.json()["job"]
        assert job["id"] != dying and not job["cancel_requested"]
        assert job["status"] in ("queued", "running")
        assert _job(client, dying)["status"] == "cancelled"
        _cancel(client, job["id"])


def test_a_cancel_caught_by_a_crash_ends_cancelled_after_the_restart(
    server: ServeProcess,
) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        job_id = _start_running(client, 310)
        surface_id = _job(client, job_id)["surface_id"]
        assert client.delete(f"/api/jobs/{job_id}").json()["cancel_requested"]
    os.killpg(server.proc.pid, signal.SIGKILL)  # before its worker's next heartbeat sees it
    server.proc.wait(30)
    restarted = ServeProcess(Path(server.data).parent, _env())
    try:
        with httpx.Client(base_url=restarted.url, timeout=60) as client:
            wait_for(lambda: _job(client, job_id)["status"] == "cancelled", 20, "cancelled")
            assert client.delete(f"/api/surfaces/{surface_id}").status_code == 204
            again = client.post("/api/surfaces", json={**LONG, "train_size": 310})
            assert again.status_code == 202 and again.json()["job"]["id"] != job_id
            _cancel(client, again.json()["job"]["id"])
    finally:
        restarted.stop()
