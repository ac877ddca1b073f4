"""Real processes: ``landscape serve`` under uvicorn, killed (SIGKILL) and stopped (SIGTERM)
mid-job, restarted, finishing from the partial HDF5 to the numbers of an uninterrupted run;
and two worker processes on one database never running the same job."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.worker import Worker
from tests.api.test_api import tiny_settings

pytestmark = pytest.mark.slow

# Slow enough per point that a kill lands mid-surface even on a fast machine.
JOB: dict[str, Any] = {
    "model": "resnet20",
    "dataset": "digits",
    "train": {"epochs": 1},
    "train_size": 512,
    "grid": {"nx": 7, "ny": 7},
}
ENV = {
    "LANDSCAPE_DEVICE": "cpu",
    "LANDSCAPE_ENGINE_WORKERS": "1",
    "LANDSCAPE_ENGINE_COMPILE": "false",
    "LANDSCAPE_PROGRESS_EVERY_SECONDS": "0",
    "LANDSCAPE_POLL_SECONDS": "0.2",
    "LANDSCAPE_LEASE_SECONDS": "5",
}
SERVE = "from landscape.cli import main; raise SystemExit(main())"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``landscape serve`` in its own process group (so a kill takes its engine workers too)."""

    def __init__(self, data_dir: Path, command: str = "serve") -> None:
        self.port = free_port()
        args = [sys.executable, "-c", SERVE, command, "--data-dir", str(data_dir)]
        if command == "serve":
            args += ["--port", str(self.port)]
        self.log = (data_dir.parent / f"{command}-{self.port}.log").open("w")
        self.proc = subprocess.Popen(
            args, env={**os.environ, **ENV}, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"
        if command == "serve":
            wait_for(lambda: self._healthy(), 60, "server start")

    def _healthy(self) -> bool:
        assert self.proc.poll() is None, "server exited during start-up"
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def get(self, path: str) -> Any:
        return httpx.get(f"{self.url}{path}", timeout=30).json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return httpx.post(f"{self.url}{path}", json=body, timeout=30).json()

    def kill(self, sig: int) -> int:
        """SIGKILL takes the whole group (a crash); SIGTERM goes to the server only, as
        ``docker stop`` sends it to PID 1."""
        if sig == signal.SIGKILL:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)
        code = self.proc.wait(60)
        self.log.close()
        return code

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill(signal.SIGKILL)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def finished(server: Server, job_id: str) -> bool:
    """True once the job is done; a failed one fails the test at once, with its error."""
    job = server.get(f"/api/jobs/{job_id}")
    assert job["status"] != "failed", f"job {job_id} failed: {job.get('error')}"
    return bool(job["status"] == "done")


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def reference_values(tmp_path: Path, body: dict[str, Any]) -> np.ndarray:
    """The same request computed in-process without interruption."""
    settings = tiny_settings(tmp_path / "reference")
    with TestClient(create_app(settings)) as client:
        surface_id = client.post("/api/surfaces", json=body).json()["job"]["surface_id"]
        worker = Worker(client.app.state.queue, settings, client.app.state.sessions)  # type: ignore[attr-defined]
        assert worker.run_once()
        return np.array(client.get(f"/api/surfaces/{surface_id}").json()["values"]["train_loss"])


def interrupted_run(
    tmp_path: Path, servers: list[Server], body: dict[str, Any], sig: int
) -> np.ndarray:
    data_dir = tmp_path / "data"
    server = Server(data_dir)
    servers.append(server)
    job = server.post("/api/surfaces", body)["job"]

    def mid_surface() -> bool:
        now = server.get(f"/api/jobs/{job['id']}")
        assert now["status"] in ("queued", "running"), now
        return now["stage"] == "computing" and 0 < now["progress"]["done"] < 49

    wait_for(mid_surface, 300, "the job to be part way through its surface")
    code = server.kill(sig)
    if sig == signal.SIGTERM:  # uvicorn re-raises the signal after its graceful shutdown
        assert code in (0, -signal.SIGTERM), f"exit code {code} after SIGTERM"
    stopped = (
        sqlite3.connect(data_dir / "jobs.sqlite3")
        .execute("SELECT status, done FROM jobs WHERE id = ?", (job["id"],))
        .fetchone()
    )
    assert stopped[1] > 0
    if sig == signal.SIGTERM:
        assert stopped[0] == "queued"  # released for resume, not left for a lease to lapse

    restarted = Server(data_dir)
    servers.append(restarted)
    final = wait_for(
        lambda: (
            (j := restarted.get(f"/api/jobs/{job['id']}"))["status"] in ("done", "failed") and j
        ),
        300,
        "the restarted job to finish",
    )
    assert final["status"] == "done", final["error"]
    data = restarted.get(f"/api/surfaces/{job['surface_id']}")
    return np.array(data["values"]["train_loss"])


@pytest.mark.timeout(900)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_interrupted_job_resumes_to_the_same_numbers(
    tmp_path: Path, servers: list[Server], sig: int
) -> None:
    resumed = interrupted_run(tmp_path, servers, JOB, sig)
    np.testing.assert_allclose(resumed, reference_values(tmp_path, JOB), rtol=1e-6, atol=1e-7)


@pytest.mark.timeout(600)
def test_two_worker_processes_never_run_the_same_job(tmp_path: Path, servers: list[Server]) -> None:
    data_dir = tmp_path / "data"
    server = Server(data_dir)
    servers.append(server)
    worker = Server(data_dir, command="worker")
    servers.append(worker)
    wait_for(lambda: "started" in worker.log_text(), 120, "the worker process to start")
    tiny = {
        "model": "mlp-plain",
        "train": {"epochs": 1},
        "train_size": 100,
        "grid": {"nx": 5, "dim": 1},
    }
    jobs = [
        server.post("/api/surfaces", {**tiny, "directions": {"seed": seed}})["job"]
        for seed in range(6)
    ]
    for job in jobs:
        wait_for(lambda job=job: finished(server, job["id"]), 300, f"job {job['id']}")
    rows = (
        sqlite3.connect(data_dir / "jobs.sqlite3")
        .execute("SELECT attempts, worker_id FROM jobs")
        .fetchall()
    )
    assert [attempts for attempts, _ in rows] == [1] * 6
