"""An express job whose estimate was wrong leaves the lane: the express worker stops it once it
has run ``EXPRESS_OVERRUN`` times the cut-off, raises its estimate so no express worker takes
it again, and a general worker finishes it from its partial state."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from api.db import Job
from api.schedule import EXPRESS_OVERRUN
from api.worker import Worker
from tests.api.test_api import TINY, tiny_settings

CUT_OFF_S = 0.02  # far below the tiny job's own time on any machine: it must overrun


def test_an_overrunning_express_job_goes_to_the_general_lane(tmp_path: Path) -> None:
    # A rate far above this CPU's: the tiny surface is estimated well under the cut-off.
    settings = tiny_settings(
        tmp_path / "data", express_max_seconds=CUT_OFF_S, flops_per_second=1e15
    )
    with TestClient(create_app(settings)) as client:
        state = client.app.state  # type: ignore[attr-defined]
        job_id = client.post("/api/surfaces", json=TINY).json()["job"]["id"]
        with state.sessions() as session:
            estimated = session.get(Job, job_id).cost_flops
        express = Worker(state.queue, state.settings, state.sessions, lane="express")
        assert express.run_once()  # it took the job, and stopped it
        with state.sessions() as session:
            job = session.get(Job, job_id)
            assert job.status == "queued" and job.worker_id is None
            raised = job.cost_flops
        rate = state.queue.throughput()
        assert raised > estimated
        assert rate.work_seconds(raised, "surface") >= 2 * EXPRESS_OVERRUN * CUT_OFF_S
        assert not express.run_once()  # no longer express work: it stays for the general lane
        general = Worker(state.queue, state.settings, state.sessions)
        assert general.run_once()
        finished = client.get(f"/api/jobs/{job_id}").json()
        assert finished["status"] == "done", finished
