"""The skip-vs-plain story over REST, in-process on tiny models: Hessian-eigenvector surfaces,
gradient-flow jobs stored with their surface, and reproduction reports (JSON and offline HTML)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from api.worker import Worker
from tests.api.test_api import TINY, tiny_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return tiny_settings(tmp_path / "data")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def run_all(client: TestClient) -> None:
    state = client.app.state  # type: ignore[attr-defined]
    worker = Worker(state.queue, state.settings, state.sessions)
    while worker.run_once():
        pass


def _surface(client: TestClient, **changes: Any) -> str:
    response = client.post("/api/surfaces", json={**TINY, **changes})
    assert response.status_code == 202, response.text
    run_all(client)
    job = client.get(f"/api/jobs/{response.json()['job']['id']}").json()
    assert job["status"] == "done", job["error"]
    return str(job["surface_id"])


def test_hessian_directions_surface(client: TestClient) -> None:
    directions = {"kind": "hessian", "normalization": "filter", "ignore": "biasbn", "seed": 0}
    surface_id = _surface(client, directions=directions)
    data = client.get(f"/api/surfaces/{surface_id}").json()
    recorded = data["provenance"]["directions"]
    assert recorded["kind"] == "hessian"
    eigenvalues = recorded["eigenvalues"]
    assert len(eigenvalues) == 2 and eigenvalues[0] >= eigenvalues[1]
    assert np.isfinite(np.asarray(data["values"]["train_loss"], dtype=float)).all()
    refused = client.post("/api/surfaces", json={**TINY, "directions": {"kind": "eigen"}})
    assert refused.status_code == 422 and "hessian" in refused.text


def test_gradient_flow_job_stores_init_and_trained(client: TestClient) -> None:
    surface_id = _surface(client)
    assert client.get(f"/api/surfaces/{surface_id}/gradient-flow").status_code == 404
    assert client.get(f"/api/surfaces/{surface_id}").json()["gradient_flow"] is False
    queued = client.post(f"/api/surfaces/{surface_id}/gradient-flow", json={})
    assert queued.status_code == 202, queued.text
    job = queued.json()["job"]
    assert job["kind"] == "gradient_flow" and job["progress"] == {"done": 0, "total": 2}
    run_all(client)
    finished = client.get(f"/api/jobs/{job['id']}").json()
    assert finished["status"] == "done", finished["error"]
    assert finished["progress"] == {"done": 2, "total": 2}

    assert client.get(f"/api/surfaces/{surface_id}").json()["gradient_flow"] is True
    flow = client.get(f"/api/surfaces/{surface_id}/gradient-flow").json()
    init, trained = flow["init"], flow["trained"]
    assert trained["names"] == init["names"] and trained["names"][0] == "stem.weight"
    assert trained["depth"] == list(range(1, len(trained["names"]) + 1))
    assert trained["n_samples"] == 200 and flow["train_size"] == 200
    assert all(g is not None and g > 0 for g in init["grad_norm"])
    assert init["grad_norm"] != trained["grad_norm"]  # one epoch moved the weights

    again = client.post(f"/api/surfaces/{surface_id}/gradient-flow", json={})
    assert again.status_code == 200 and again.json()["gradient_flow"] == flow
    other = client.post(f"/api/surfaces/{surface_id}/gradient-flow", json={"mode": "eval"})
    assert other.status_code == 202  # another BN mode is another profile
    bad = client.post(f"/api/surfaces/{surface_id}/gradient-flow", json={"mode": "sideways"})
    assert bad.status_code == 422


TINY_REPORT: dict[str, Any] = {
    "pairs": [["mlp-residual", "mlp-plain"]],
    "seeds": [0],
    "epochs": 1,
    "train_size": 96,
    "test_size": 48,
    "ranges": [[0.25, 3]],
    "model_args": {"depth": 2, "width": 8},
}


@pytest.mark.slow
def test_report_job_json_and_offline_html(client: TestClient) -> None:
    queued = client.post("/api/reports", json=TINY_REPORT)
    assert queued.status_code == 202, queued.text
    job, report = queued.json()["job"], queued.json()["report"]
    assert job["kind"] == "report" and job["surface_id"] == report["id"]
    assert job["progress"] == {"done": 0, "total": 2 + 2 * 2}  # 2 trainings, 2 × (1 surface + 1)
    assert report["status"] == "pending" and report["html"] is None
    assert report["recipe"]["epochs"] == 1 and report["recipe"]["lr"] == 0.1  # recipe defaults
    assert report["recipe"]["precision"] == "fp32"
    assert client.get(f"/api/reports/{report['id']}").status_code == 404
    shared = client.post("/api/reports", json=TINY_REPORT)
    assert shared.status_code == 202 and shared.json()["job"]["id"] == job["id"]
    run_all(client)

    finished = client.get(f"/api/jobs/{job['id']}").json()
    assert finished["status"] == "done", finished["error"]
    listed = client.get("/api/reports").json()
    assert [r["id"] for r in listed] == [report["id"]] and listed[0]["status"] == "done"
    numbers = client.get(f"/api/reports/{report['id']}").json()
    assert set(numbers["nets"]) == {"mlp-residual/seed0", "mlp-plain/seed0"}
    assert numbers["recipe"]["pairs"] == [["mlp-residual", "mlp-plain"]]
    assert numbers["precision"]["surfaces"] == numbers["precision"]["hessian"] == "fp32"
    page = client.get(listed[0]["html"])
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<section id='gradient-flow'>" in page.text and 'src="http' not in page.text
    again = client.post("/api/reports", json=TINY_REPORT)
    assert again.status_code == 200 and again.json()["report"]["status"] == "done"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"epochs": 31}, "limit of 30"),
        ({"seeds": [0, 1, 2, 3, 4, 5, 6]}, "trainings"),
        ({"pairs": [["resnet20", "nonet"]]}, "nonet"),
        ({"ranges": [[0.25, 500]]}, "500×500"),
        ({"lr": 1.0}, "lr"),
    ],
)
def test_report_limits_are_422(client: TestClient, change: dict[str, Any], needle: str) -> None:
    refused = client.post("/api/reports", json={**TINY_REPORT, **change})
    assert refused.status_code == 422 and needle in refused.text, refused.text
    assert client.get("/api/reports").json() == []


# a Hessian analysis of fixed cost (5 Lanczos steps on 32 images): ARPACK's top eigenvalue
# of a barely trained Transformer can take minutes to converge
HESSIAN_SMALL = {"top": 0, "bottom": 0, "density_probes": 1, "density_steps": 5, "train_size": 32}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["highway-10-noshort", "transformer-6-noresidual", "lstm", "rnn"])
def test_identity_families_through_the_api(client: TestClient, model: str) -> None:
    """Each new family trains, yields a surface, a Hessian analysis and gradient flow over
    REST; a recurrent net's flow also runs through its time steps (8 rows of digits)."""
    surface_id = _surface(client, model=model, train_size=96)
    replies = []
    for route, body in (("hessian", HESSIAN_SMALL), ("gradient-flow", {})):
        replies.append(client.post(f"/api/surfaces/{surface_id}/{route}", json=body))
        assert replies[-1].status_code == 202, replies[-1].text
        run_all(client)  # one job per surface at a time
    for reply in replies:
        job = client.get(f"/api/jobs/{reply.json()['job']['id']}").json()
        assert job["status"] == "done", job["error"]
    summary = client.get(f"/api/surfaces/{surface_id}").json()
    assert summary["gradient_flow"] is True
    hessian = client.get(f"/api/surfaces/{surface_id}/hessian").json()
    assert hessian["density"]["matvecs"] >= 5
    profiles = client.get(f"/api/surfaces/{surface_id}/gradient-flow").json()
    steps = profiles["trained"]["time_grad_norm"]
    if model in ("lstm", "rnn"):
        assert len(steps) == 8 and all(g > 0 for g in steps)
        assert profiles["init"]["through_time_ratio"] > 0
    else:
        assert steps is None and profiles["trained"]["through_time_ratio"] is None


def test_report_family_recipe_and_its_model_args(tmp_path: Path) -> None:
    """The family's own model arguments (highway: gate_bias -4) stay unless the request
    replaces them; the quick recipe is the CLI's; an unknown family is a 422."""
    settings = tiny_settings(tmp_path / "data", max_active_jobs_per_client=1000)
    with TestClient(create_app(settings)) as client:
        _queue_family_reports(client)


def _queue_family_reports(client: TestClient) -> None:
    base = {"train_size": 96, "test_size": 48}
    highway = client.post("/api/reports", json={**base, "family": "highway", "epochs": 2})
    assert highway.status_code == 202, highway.text
    recipe = highway.json()["report"]["recipe"]
    assert recipe["pairs"][0] == ["highway-10", "highway-10-noshort"]
    assert dict(recipe["model_args"]) == {"gate_bias": -4}
    replaced = client.post(
        "/api/reports",
        json={**base, "family": "highway", "epochs": 2, "model_args": {"gate_bias": -1}},
    )
    assert dict(replaced.json()["report"]["recipe"]["model_args"]) == {"gate_bias": -1}
    quick = client.post("/api/reports", json={**base, "family": "transformer", "quick": True})
    assert quick.status_code == 202, quick.text
    assert quick.json()["report"]["recipe"]["seeds"] == [0, 1]
    unknown = client.post("/api/reports", json={**base, "family": "capsule"})
    assert unknown.status_code == 422 and "family" in unknown.text


def test_report_families_of_the_api_are_the_recipes() -> None:
    """The request's family names are ``landscape reproduce --family``'s, no more, no fewer."""
    from typing import get_args

    from api.schemas.report import FamilyName
    from landscape.report.recipe import FAMILIES

    assert set(get_args(FamilyName)) == set(FAMILIES)
