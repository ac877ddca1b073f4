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


def test_a_request_caps_the_lanczos_run(client: TestClient) -> None:  # noqa: F811
    from landscape import storage as store

    state = client.app.state  # type: ignore[attr-defined]
    directions = {"kind": "hessian", "seed": 0, "max_lanczos_steps": 3}
    response = client.post("/api/surfaces", json={**TINY, "directions": directions})
    assert response.status_code == 202, response.text
    run_all(client)
    job = client.get(f"/api/jobs/{response.json()['job']['id']}").json()
    assert job["status"] == "done", job["error"]
    path = state.settings.surfaces_dir / f"{job['surface_id']}.h5"
    info = store.read_surface(path).attrs["directions_info"]
    assert info["lanczos_steps"] == 3 and info["max_lanczos_steps"] == 3

    too_many = {**directions, "max_lanczos_steps": 201}
    refused = client.post("/api/surfaces", json={**TINY, "directions": too_many})
    assert refused.status_code == 422 and "max_lanczos_steps" in refused.text
    random = {"kind": "random", "max_lanczos_steps": 3}
    refused = client.post("/api/surfaces", json={**TINY, "directions": random})
    assert refused.status_code == 422 and "kind 'hessian'" in refused.text


def test_the_estimate_counts_the_lanczos_cap() -> None:
    from api.planning.cost import NetCost, surface_estimate
    from landscape.specs import DataSpec, DirectionSpec, GridSpec, SurfaceSpec

    net = NetCost(params=10_000, flops=1_000_000, activation_bytes=10_000)

    def directions_work(steps: int) -> tuple[float, float]:
        spec = SurfaceSpec(
            checkpoint="c.pt",
            data=DataSpec(train_size=100),
            grid=GridSpec(n_x=3, n_y=3),
            directions=DirectionSpec(kind="hessian", max_lanczos_steps=steps),
        )
        parts = dict(surface_estimate(spec, None, net, (1, 8, 8)).parts)
        return parts["directions"].flops, parts["directions"].memory_bytes

    (flops_10, memory_10), (flops_100, memory_100) = directions_work(10), directions_work(100)
    assert flops_100 / flops_10 == (100 + 2) / (10 + 2)  # steps + one residual per direction
    assert memory_100 - memory_10 == 90 * 10_000 * 8  # a float64 basis vector per step
