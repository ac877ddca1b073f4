"""The fair queue (api/schedule.py): small jobs are not stuck behind the demo, long jobs are
not starved past the aging bound, and every queued job has a consistent position and ETA.

The demo's real requests are queued (planned and priced by the real cost model on the meta
device); workers are driven by hand with ``claim`` so nothing trains.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.app import create_app
from api.db import Job
from api.demo import demo_requests
from api.planning.job_cost import JOB_COSTS
from api.runners.base import JobKind
from api.schedule import (
    KIND_PRIORS,
    PRIOR_FLOPS_PER_SECOND,
    QueuePolicy,
    Run,
    Throughput,
    claim_order,
    schedule,
)
from api.settings import Settings
from api.worker import WorkerPool
from tests.api.test_api import tiny_settings
from tests.api.test_budget_refusals import PAPER_SURFACE, default_settings

# What the web form sends for an 11×11 mlp-plain surface (its defaults: the demo's recipe).
FORM_REQUEST: dict[str, Any] = {
    "model": "mlp-plain",
    "dataset": "digits",
    "train": {"epochs": 30},
    "grid": {"nx": 11, "ny": 11, "xrange": [-1, 1], "yrange": [-1, 1]},
    "directions": {"kind": "random", "normalization": "filter", "ignore": "biasbn", "seed": 0},
}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = tiny_settings(tmp_path / "data", max_grid_points=5000, queue_aging_seconds=600)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def queue_demo_then_form(client: TestClient) -> tuple[list[str], str]:
    """The demo's jobs, then the form's small job: (demo job ids, small job id)."""
    demo = []
    for request in demo_requests():
        reply = client.post("/api/surfaces", json=request.model_dump(mode="json"))
        assert reply.status_code == 202, reply.text
        demo.append(reply.json()["job"]["id"])
    reply = client.post("/api/surfaces", json=FORM_REQUEST)
    assert reply.status_code == 202, reply.text
    return demo, reply.json()["job"]["id"]


def test_small_job_is_claimed_before_the_demo_in_either_lane(client: TestClient) -> None:
    demo, small = queue_demo_then_form(client)
    queue = client.app.state.queue  # type: ignore[attr-defined]
    # The express worker takes the small job and nothing of the demo.
    assert queue.claim("here:1:a-express", "express").id == small
    assert queue.claim("here:1:b-express", "express") is None
    # A general worker takes the shortest first: the ResNet-20 pair before the ResNet-56 ones.
    first = queue.claim("here:1:c", "general")
    assert client.get(f"/api/jobs/{first.id}").json()["request"]["model"].startswith("resnet20")
    assert first.id in demo


def test_general_worker_takes_the_small_job_first_without_an_express_lane(
    client: TestClient,
) -> None:
    _demo, small = queue_demo_then_form(client)
    queue = client.app.state.queue  # type: ignore[attr-defined]
    assert queue.claim("here:1:a", "general").id == small


def test_a_long_job_queued_past_the_aging_bound_goes_first(client: TestClient) -> None:
    demo, _small = queue_demo_then_form(client)
    state = client.app.state  # type: ignore[attr-defined]
    longest = demo[-1]  # ResNet-56 without shortcuts, 31×31: the largest estimate
    with state.sessions() as session, session.begin():
        aged = time.time() - state.settings.queue_aging_seconds - 1
        session.execute(update(Job).where(Job.id == longest).values(created_at=aged))
    assert state.queue.claim("here:1:a", "general").id == longest


def test_positions_and_times_are_consistent(client: TestClient) -> None:
    demo, small = queue_demo_then_form(client)
    jobs = {job["id"]: job for job in client.get("/api/jobs").json()}
    estimates = [jobs[job_id]["estimate"] for job_id in [*demo, small]]
    positions = sorted(e["position"] for e in estimates)
    assert positions == list(range(1, len(estimates) + 1))
    by_position = sorted(estimates, key=lambda e: e["position"])
    starts = [datetime.fromisoformat(e["start_at"]) for e in by_position]
    assert starts == sorted(starts)
    for estimate in estimates:
        run = datetime.fromisoformat(estimate["end_at"]) - datetime.fromisoformat(
            estimate["start_at"]
        )
        assert abs(run.total_seconds() - estimate["seconds"]) <= 1.0
        assert estimate["flops"] > 0 and "LANDSCAPE_FLOPS_PER_SECOND" in estimate["basis"]
    small_estimate = jobs[small]["estimate"]
    # Submitted last, the small job starts at once in the express lane, within the minute.
    assert small_estimate["lane"] == "express" and small_estimate["position"] == 1
    wait = datetime.fromisoformat(small_estimate["start_at"]).timestamp() - time.time()
    assert wait < 60
    # The same estimate on the job's own endpoint and its event stream.
    assert client.get(f"/api/jobs/{small}").json()["estimate"] == small_estimate
    with client.stream("GET", f"/api/jobs/{small}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                assert '"position":1' in line and '"lane":"express"' in line
                break


def test_running_jobs_push_back_the_queued_ones(client: TestClient) -> None:
    demo, small = queue_demo_then_form(client)
    queue = client.app.state.queue  # type: ignore[attr-defined]
    running = queue.claim("here:1:g", "general")  # the general worker is now busy
    estimates = queue.estimates()
    assert estimates[running.id].position is None and estimates[running.id].lane == "general"
    end = datetime.fromisoformat(estimates[running.id].end_at)
    others = [estimates[j] for j in demo if j != running.id]
    assert all(datetime.fromisoformat(e.start_at) >= end for e in others)
    assert datetime.fromisoformat(estimates[small].start_at) < end  # express: not behind it


def test_the_rate_is_measured_from_finished_jobs() -> None:
    # Three finished surfaces, each working twice as long as the prior said: the rate halves.
    prior = Throughput.fit([], prior_rate=1e9).rate("surface")
    runs = [
        Run("surface", f, prior.overhead_s + 2 * f / prior.flops_per_second)
        for f in (1e11, 2e11, 3e11)
    ]
    fitted = Throughput.fit(runs, prior_rate=1e9)
    assert fitted.samples == 3 and "measured" in fitted.basis
    assert fitted.rate("surface").flops_per_second == pytest.approx(
        prior.flops_per_second / 2, rel=0.01
    )
    assert Throughput.fit(runs[:1], prior_rate=7.0).rate("surface") == Throughput.fit(
        [], prior_rate=7.0
    ).rate("surface")  # one job is too few to correct by


def test_a_long_job_is_not_starved_by_a_stream_of_small_ones() -> None:
    """Replay the rule: a small job arrives every 10 s forever; the long one still starts by
    the aging bound plus the run of the job in progress when it became due."""
    policy = QueuePolicy(aging_seconds=300, express_max_seconds=0, general_workers=1)
    rate = Throughput(overhead_s=0.0, flops_per_second=1.0, samples=0)
    long_job = rate.waiting("long", 0.0, 3600.0)
    small = [rate.waiting(f"s{i:03d}", i * 10.0, 30.0) for i in range(200)]
    assert claim_order([long_job, *small[:3]], "general", 10.0, policy)[0].id == "s000"
    slots = schedule([long_job, *small], [], policy, at=0.0)
    assert slots["long"].start_at <= policy.aging_seconds + 30.0


def test_an_estimate_queues_nothing_and_names_cancelled_jobs_for_resume(
    client: TestClient,
) -> None:
    demo = [r.model_dump(mode="json", exclude_none=True) for r in demo_requests()[:2]]
    reply = client.post("/api/jobs/estimate", json={"surfaces": demo})
    assert reply.status_code == 200, reply.text
    plan = reply.json()
    assert client.get("/api/jobs").json() == []  # nothing was queued
    assert [job["action"] for job in plan["jobs"]] == ["new", "new"] and plan["new_jobs"] == 2
    assert plan["seconds"] == pytest.approx(sum(j["estimate"]["seconds"] for j in plan["jobs"]))
    assert {job["estimate"]["position"] for job in plan["jobs"]} == {1, 2}

    queued = client.post("/api/surfaces", json=demo[0]).json()["job"]
    client.delete(f"/api/jobs/{queued['id']}")
    again = client.post("/api/jobs/estimate", json={"surfaces": demo}).json()
    first, second = again["jobs"]
    assert first["action"] == "resume" and first["job"]["status"] == "cancelled"
    assert first["id"] == queued["surface_id"] and second["action"] == "new"
    running = client.post("/api/surfaces", json=demo[1]).json()["job"]
    shared = client.post("/api/jobs/estimate", json={"surfaces": demo[1:]}).json()["jobs"][0]
    assert shared["action"] == "active" and shared["job"]["id"] == running["id"]
    assert shared["estimate"]["position"] == 1


def test_an_estimate_refuses_what_the_post_would(client: TestClient) -> None:
    too_big = {**FORM_REQUEST, "grid": {"nx": 101, "ny": 101}}
    reply = client.post("/api/jobs/estimate", json={"surfaces": [too_big]})
    assert reply.status_code == 422 and "limit" in reply.json()["detail"]


def test_a_landscape_train_checkpoint_uploads_without_naming_its_model(
    client: TestClient, tmp_path: Path
) -> None:
    import io

    import torch

    from tests.cli_support import tiny_mlp_checkpoint

    own = tiny_mlp_checkpoint(tmp_path)
    upload = {"file": ("mlp.pt", own.read_bytes(), "application/octet-stream")}
    reply = client.post("/api/checkpoints", files=upload, data={"dataset": "digits"})
    assert reply.status_code == 201, reply.text
    assert reply.json()["model"] == "mlp-plain"
    # A bare state_dict records no model: the form must name it.
    buffer = io.BytesIO()
    torch.save(torch.load(own, weights_only=True)["state_dict"], buffer)
    bare = {"file": ("bare.pt", buffer.getvalue(), "application/octet-stream")}
    refused = client.post("/api/checkpoints", files=bare, data={"dataset": "digits"})
    assert refused.status_code == 422 and "name its architecture" in refused.json()["detail"]


def test_the_demo_trains_with_the_report_recipe() -> None:
    from landscape.report.recipe import ReproduceSpec

    for request in demo_requests():
        assert request.train is not None
        spec = ReproduceSpec().train_spec(request.model or "", seed=0)
        assert request.train.warmup_epochs == spec.warmup_epochs
        assert (request.train.lr, request.train.schedule) == (spec.lr, spec.schedule)
    assert {r.train.warmup_epochs for r in demo_requests() if r.model == "resnet56"} == {1}


def _same_estimate(client: TestClient, job: dict[str, Any]) -> None:
    """The POST's job carries the estimate GET of the job gives (times to the second)."""
    assert job["estimate"] is not None, job
    got = client.get(f"/api/jobs/{job['id']}").json()["estimate"]
    assert {k: job["estimate"][k] for k in ("position", "lane", "flops")} == {
        k: got[k] for k in ("position", "lane", "flops")
    }
    assert job["estimate"]["start_at"] and job["estimate"]["end_at"] is not None


def test_every_post_that_queues_a_job_says_where_it_stands(client: TestClient) -> None:
    from tests.api.test_api import TINY, run_all
    from tests.api.test_gradient_flow_and_report import TINY_REPORT

    surface = client.post("/api/surfaces", json=TINY).json()
    _same_estimate(client, surface["job"])
    run_all(client)
    surface_id = surface["job"]["surface_id"]
    hessian = client.post(f"/api/surfaces/{surface_id}/hessian", json={"top": 1, "bottom": 0})
    _same_estimate(client, hessian.json()["job"])
    run_all(client)  # one analysis of a surface at a time
    flow = client.post(f"/api/surfaces/{surface_id}/gradient-flow", json={})
    _same_estimate(client, flow.json()["job"])
    run_all(client)
    sharpness = client.post(f"/api/surfaces/{surface_id}/sharpness", json={})
    _same_estimate(client, sharpness.json()["job"])
    report = client.post("/api/reports", json=TINY_REPORT).json()
    _same_estimate(client, report["job"])
    assert report["report"]["job"]["estimate"] == report["job"]["estimate"]


@pytest.mark.parametrize("kind", [k.value for k in JobKind])
def test_every_job_kind_has_a_cost(kind: str) -> None:
    assert kind in JOB_COSTS  # a kind without one is queued as a long job, whatever its size


def test_a_sharpness_job_is_priced_like_its_budget_check(client: TestClient) -> None:
    from tests.api.test_api import TINY, run_all

    surface_id = client.post("/api/surfaces", json=TINY).json()["job"]["surface_id"]
    run_all(client)
    job = client.post(f"/api/surfaces/{surface_id}/sharpness", json={}).json()["job"]
    estimate = client.get(f"/api/jobs/{job['id']}").json()["estimate"]
    assert estimate["flops"] and estimate["flops"] > 0 and estimate["end_at"]


def test_the_flops_budget_says_what_it_limits() -> None:
    words = Settings.model_fields["max_job_flops"].description or ""
    assert "before the job is queued" in words and "Not a time limit" in words
    budget = Settings.model_fields["max_job_flops"].default
    hours = budget / PRIOR_FLOPS_PER_SECOND["cpu"] / 3600
    assert f"about {hours:.0f} hours" in words  # the help's arithmetic, kept true
    rate_words = Settings.model_fields["flops_per_second"].description or ""
    for rate in PRIOR_FLOPS_PER_SECOND.values():  # the help names each prior, kept true
        assert re.sub(r"e\+0?", "e", f"{rate:.0e}") in rate_words


# ------------------------------------------------------------- the deployment as it is

WEEK_S = 7 * 86400


def _paper_estimate(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    """What ``POST /api/jobs/estimate`` says of the paper's surface, under budgets that
    admit it: its FLOPs, seconds and basis."""
    settings = default_settings(tmp_path / "data", max_job_flops=1e18, **changes)
    with TestClient(create_app(settings)) as client:
        reply = client.post("/api/jobs/estimate", json={"surfaces": [PAPER_SURFACE]})
    assert reply.status_code == 200, reply.text
    estimate: dict[str, Any] = reply.json()["jobs"][0]["estimate"]
    return estimate


def test_a_cuda_deployment_estimates_the_papers_surface_in_minutes_not_months(
    tmp_path: Path,
) -> None:
    # The compose API: on a CPU, computing on CUDA workers.
    gpu = _paper_estimate(tmp_path / "gpu", compute_device="cuda")
    assert gpu["flops"] > 3e16
    assert 10 * 60 < gpu["seconds"] < 6 * 3600
    surface = KIND_PRIORS["surface"]  # the paper's job at a surface's rate: calibrated on a CPU

    def timed(flops: float, rate: float, speed: float = 1.0) -> float:
        return surface.overhead_s + flops / (rate * speed)

    assert gpu["seconds"] == pytest.approx(timed(gpu["flops"], 1e13), rel=1e-3)
    assert "CUDA worker" in gpu["basis"]
    cpu = _paper_estimate(tmp_path / "cpu", compute_device="cpu")
    assert cpu["seconds"] == pytest.approx(timed(cpu["flops"], 3e9, surface.speed), rel=1e-3)
    assert cpu["seconds"] > 10 * WEEK_S and "CPU worker" in cpu["basis"]
    told = _paper_estimate(tmp_path / "told", compute_device="cuda", flops_per_second=4e13)
    assert told["seconds"] == pytest.approx(timed(told["flops"], 4e13), rel=1e-3)
    assert "LANDSCAPE_FLOPS_PER_SECOND" in told["basis"] and "prior" not in told["basis"]


def test_an_unset_or_empty_rate_is_the_device_class_prior(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANDSCAPE_FLOPS_PER_SECOND", "")  # compose forwards an unset one so
    settings = Settings(compute_device="cuda")
    assert settings.flops_per_second is None
    assert QueuePolicy.from_settings(settings).prior_rate == PRIOR_FLOPS_PER_SECOND["cuda"]
    monkeypatch.setenv("LANDSCAPE_FLOPS_PER_SECOND", "2e12")
    assert QueuePolicy.from_settings(Settings(compute_device="cuda")).prior_rate == 2e12


@pytest.fixture
def gpu_client(tmp_path: Path) -> Iterator[TestClient]:
    """The compose API on a CPU, planning for CUDA workers."""
    settings = tiny_settings(
        tmp_path / "data", max_grid_points=5000, queue_aging_seconds=600, compute_device="cuda"
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_a_cuda_deployment_has_no_express_lane_in_its_estimates(gpu_client: TestClient) -> None:
    client = gpu_client
    for request in demo_requests():
        assert client.post("/api/surfaces", json=request.model_dump(mode="json")).is_success
    queue = client.app.state.queue  # type: ignore[attr-defined]
    running = queue.claim("here:1:g", "general")  # the GPU's one job at a time
    reply = client.post("/api/surfaces", json=FORM_REQUEST)  # then a small job arrives
    small = reply.json()["job"]["estimate"]
    end = queue.estimates()[running.id].end_at
    # No express worker beside the running job: the small one waits for it, then goes first.
    assert small["lane"] == "general" and small["position"] == 1
    assert datetime.fromisoformat(small["start_at"]) >= datetime.fromisoformat(end)
    assert {e.lane for e in queue.estimates().values()} == {"general"}


def test_a_cuda_worker_process_starts_no_express_threads(
    gpu_client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = gpu_client.app.state  # type: ignore[attr-defined]
    cpu = WorkerPool(state.queue, tiny_settings(tmp_path / "data"), state.sessions, 1)
    assert [w.lane for w in cpu.workers] == ["general", "express"]
    monkeypatch.setattr(
        "api.runners.base.resolve_device",
        lambda name: torch.device("cpu" if name == "cpu" else "cuda"),
    )
    gpu_settings = tiny_settings(tmp_path / "data", device="cuda", compute_device="cuda")
    gpu = WorkerPool(state.queue, gpu_settings, state.sessions, 1)
    assert [w.lane for w in gpu.workers] == ["general"]
