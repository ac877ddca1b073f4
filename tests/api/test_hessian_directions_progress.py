"""A Hessian-directions surface job reports its Lanczos steps as stage ``directions`` before
its grid points, and the job reads back over REST while it is in that stage."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.api.test_api import TINY
from tests.api.test_gradient_flow_and_report import client, run_all, settings  # noqa: F401


def test_directions_stage_is_reported_and_served(client: TestClient) -> None:  # noqa: F811
    queue = client.app.state.queue  # type: ignore[attr-defined]
    real = queue.set_progress
    seen: list[tuple[str, int | None, int | None]] = []
    served: list[dict[str, Any]] = []

    def recording(job_id: str, worker_id: str, **values: Any) -> bool:
        ok: bool = real(job_id, worker_id, **values)
        seen.append((values["stage"], values.get("done"), values.get("total")))
        if values["stage"] == "directions" and not served:
            served.append(client.get(f"/api/jobs/{job_id}").json())
        return ok

    queue.set_progress = recording
    directions = {"kind": "hessian", "normalization": "filter", "ignore": "biasbn", "seed": 0}
    response = client.post("/api/surfaces", json={**TINY, "directions": directions})
    assert response.status_code == 202, response.text
    run_all(client)
    job = client.get(f"/api/jobs/{response.json()['job']['id']}").json()
    assert job["status"] == "done", job["error"]

    stages = [stage for stage, _, _ in seen]
    steps = [(done, total) for stage, done, total in seen if stage == "directions"]
    assert steps[0] == (1, 100) and [d for d, _ in steps] == list(range(1, len(steps) + 1))
    assert stages.index("computing", stages.index("directions")) > stages.index("directions")
    assert "directions" not in stages[stages.index("computing", stages.index("directions")) :]
    assert served[0]["stage"] == "directions" and served[0]["progress"] == {"done": 1, "total": 100}
