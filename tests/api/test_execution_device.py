"""What a job computes is planned; where it runs is the executing worker's setting.

The compose deployment in miniature, without a GPU: an API on a CPU (``device=cpu``) that
declares precision for CUDA workers (``compute_device=cuda``), and workers whose own settings
name another device, engine processes, compile and backend. The CUDA worker is a CPU process
told by a patched device resolver that it has CUDA; the library calls it would make are
replaced by recorders, so the tests see exactly the options each runner executes with.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from fastapi.testclient import TestClient

from api.app import create_app
from api.planning.surface import Plan
from api.runners.base import JobContext, JobKind
from api.settings import Settings
from api.worker import Worker, WorkerPool
from landscape.specs import EngineOptions, to_dict
from landscape.storage import surface_key
from tests.api.test_api import TINY, tiny_settings
from tests.api.test_gradient_flow_and_report import TINY_REPORT

ROOT = Path(__file__).resolve().parent.parent.parent
WHERE = {"device", "devices", "workers", "compile", "backend", "ray_address"}
GPU_WORKER: dict[str, Any] = {
    "device": "cuda",
    "compute_device": "cuda",
    "engine_workers": 3,
    "engine_compile": True,
    "engine_devices": (0,),
    "engine_backend": "ray",
    "ray_address": "ray-head:6379",
}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def api(data_dir: Path) -> Iterator[TestClient]:
    """The compose API: on a CPU, planning for CUDA workers, running no jobs itself."""
    with TestClient(create_app(tiny_settings(data_dir, compute_device="cuda"))) as client:
        yield client


@pytest.fixture
def pretend_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers resolve ``cuda`` (and ``auto``) to a CUDA device without probing for one."""

    def resolve(name: str) -> torch.device:
        return torch.device("cpu" if name == "cpu" else "cuda")

    monkeypatch.setattr("api.runners.base.resolve_device", resolve)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The library entry points the runners call, replaced by recorders of their arguments."""
    seen: dict[str, Any] = {}

    def record(name: str, result: Any = None) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            seen[name] = (args, kwargs)
            return result

        return call

    monkeypatch.setattr("landscape.surface.compute_surface", record("surface"))
    monkeypatch.setattr("landscape.train.train_model", record("train", {"epochs": 1}))
    monkeypatch.setattr("landscape.analysis.analyze", record("hessian", ({}, {})))
    flow = "landscape.analysis.flow_analyze.analyze_gradient_flow"
    monkeypatch.setattr(flow, record("gradient_flow", {}))
    # The package re-exports the function under its module's name: patch the module itself.
    reproduce_module = importlib.import_module("landscape.report.reproduce")
    monkeypatch.setattr(reproduce_module, "reproduce", record("report"))
    return seen


def keys_in(value: Any) -> set[str]:
    """Every key of every mapping in a JSON value, at any depth."""
    if isinstance(value, dict):
        return set(value).union(*(keys_in(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(keys_in(v) for v in value))
    return set()


def stored_plan(client: TestClient, job_id: str) -> dict[str, Any]:
    job = client.app.state.queue.get(job_id)  # type: ignore[attr-defined]
    assert job is not None and job.plan is not None
    return dict(job.plan)


def run_with(client: TestClient, data_dir: Path, **settings: Any) -> Worker:
    """Run every queued job with a worker of these settings (the API's queue and database)."""
    state = client.app.state  # type: ignore[attr-defined]
    worker = Worker(state.queue, tiny_settings(data_dir, **settings), state.sessions)
    while worker.run_once():
        pass
    return worker


def job(client: TestClient, job_id: str) -> dict[str, Any]:
    reply: dict[str, Any] = client.get(f"/api/jobs/{job_id}").json()
    return reply


def queued(client: TestClient, path: str, body: dict[str, Any]) -> str:
    reply = client.post(path, json=body)
    assert reply.status_code == 202, reply.text
    return str(reply.json()["job"]["id"])


def test_cpu_api_declares_tf32_and_stores_no_place(api: TestClient) -> None:
    job_id = queued(api, "/api/surfaces", TINY)
    plan = stored_plan(api, job_id)
    assert not keys_in(plan) & WHERE, keys_in(plan) & WHERE
    assert plan["precision"] == "tf32"
    rebuilt = Plan.from_json(plan)
    assert job(api, job_id)["surface_id"] == surface_key(
        rebuilt.surface_spec, rebuilt.checkpoint_id, "tf32"
    )
    assert api.get("/api/config").json()["compute"] == {"device": "cuda", "precision": "tf32"}


@pytest.mark.usefixtures("pretend_cuda")
def test_surface_and_training_run_with_the_workers_options(
    api: TestClient, data_dir: Path, calls: dict[str, Any]
) -> None:
    job_id = queued(api, "/api/surfaces", TINY)
    run_with(api, data_dir, **GPU_WORKER)
    assert job(api, job_id)["status"] == "done", job(api, job_id)["error"]
    options = calls["surface"][1]["options"]
    assert options == EngineOptions(
        device="cuda",
        precision="tf32",
        workers=3,
        devices=(0,),
        compile=True,
        backend="ray",
        ray_address="ray-head:6379",
    )
    (train_spec, _out), _ = calls["train"]
    assert train_spec.device == "cuda"


@pytest.mark.usefixtures("pretend_cuda")
def test_a_plan_stored_by_the_previous_version_runs_on_the_worker(
    api: TestClient, data_dir: Path, calls: dict[str, Any]
) -> None:
    """Rows stored before the split held the API's engine options and training device."""
    job_id = queued(api, "/api/surfaces", TINY)
    plan = stored_plan(api, job_id)
    old = {k: v for k, v in plan.items() if k != "precision"}
    old["engine"] = to_dict(EngineOptions(device="cpu", precision="fp32", workers=1))
    old["train_spec"] = {**plan["train_spec"], "device": "cpu"}
    rebuilt = Plan.from_json(old)
    assert rebuilt.precision == "fp32" and rebuilt.train_spec is not None
    with api.app.state.sessions() as session, session.begin():  # type: ignore[attr-defined]
        from api.db import Job

        row = session.get(Job, job_id)
        assert row is not None
        row.plan = old
    run_with(api, data_dir, **GPU_WORKER)
    assert job(api, job_id)["status"] == "done", job(api, job_id)["error"]
    options = calls["surface"][1]["options"]
    assert (options.device, options.precision, options.workers) == ("cuda", "fp32", 3)
    assert calls["train"][0][0].device == "cuda"


def test_a_cpu_worker_refuses_a_tf32_plan(api: TestClient, data_dir: Path) -> None:
    job_id = queued(api, "/api/surfaces", TINY)
    run_with(api, data_dir, compute_device="cuda")  # device=cpu, nothing replaced
    failed = job(api, job_id)
    assert failed["status"] == "failed"
    error = failed["error"]
    assert "worker's device is cpu" in error and "'tf32'" in error, error
    assert "LANDSCAPE_COMPUTE_DEVICE" in error and "CUDA worker" in error, error
    assert not list((data_dir / "checkpoints").glob("*.pt"))  # refused before training


@pytest.fixture
def computed_surface(data_dir: Path) -> str:
    """A complete surface, computed for real by a CPU service (fp32) on the same data folder."""
    with TestClient(create_app(tiny_settings(data_dir))) as cpu:
        job_id = queued(cpu, "/api/surfaces", TINY)
        run_with(cpu, data_dir)
        finished = job(cpu, job_id)
        assert finished["status"] == "done", finished["error"]
        return str(finished["surface_id"])


@pytest.mark.usefixtures("pretend_cuda")
def test_analyses_and_reports_run_on_the_workers_device(
    computed_surface: str, api: TestClient, data_dir: Path, calls: dict[str, Any]
) -> None:
    # computed_surface comes first: fixtures are set up in argument order, and calls
    # replaces the library calls that computing it makes.
    requests = {  # one after the other: a surface has one active job at a time
        "hessian": (f"/api/surfaces/{computed_surface}/hessian", {"top": 1}),
        "gradient_flow": (f"/api/surfaces/{computed_surface}/gradient-flow", {}),
        "report": ("/api/reports", TINY_REPORT),
    }
    for kind, (path, body) in requests.items():
        job_id = queued(api, path, body)
        plan = stored_plan(api, job_id)
        assert not keys_in(plan) & WHERE, (kind, keys_in(plan) & WHERE)
        assert kind != "report" or plan["precision"] == "fp32"  # a report's default
        run_with(api, data_dir, **GPU_WORKER)
        assert job(api, job_id)["status"] == "done", job(api, job_id)["error"]
    (analysis_spec, _surface), _ = calls["hessian"]
    assert analysis_spec.device == "cuda"
    assert calls["gradient_flow"][1]["device"] == "cuda"
    (recipe, _out), _ = calls["report"]
    assert (recipe.device, recipe.workers) == ("cuda", 3)


def test_a_cpu_worker_refuses_a_report_declared_for_cuda(
    api: TestClient, data_dir: Path, calls: dict[str, Any]
) -> None:
    job_id = queued(api, "/api/reports", {**TINY_REPORT, "precision": "tf32"})
    run_with(api, data_dir, compute_device="cuda")
    failed = job(api, job_id)
    assert failed["status"] == "failed" and "report" not in calls
    assert "worker's device is cpu" in failed["error"] and "'tf32'" in failed["error"]


def test_compose_gives_api_and_worker_one_compute_device() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    api, worker = (compose["services"][name]["environment"] for name in ("api", "worker"))
    assert api["LANDSCAPE_COMPUTE_DEVICE"] == worker["LANDSCAPE_COMPUTE_DEVICE"] == "cuda"
    assert api["LANDSCAPE_DEVICE"] == "cpu" and worker["LANDSCAPE_DEVICE"] == "cuda"


def _pool(client: TestClient, settings: Settings, runner: Any, count: int = 2) -> WorkerPool:
    state = client.app.state  # type: ignore[attr-defined]
    runners = {JobKind.SURFACE: runner}
    return WorkerPool(state.queue, settings, state.sessions, count, runners=runners)


def _run_pool(client: TestClient, pool: WorkerPool, job_ids: list[str]) -> None:
    pool.start()
    try:
        deadline = time.monotonic() + 20
        while any(job(client, j)["status"] != "done" for j in job_ids):
            assert time.monotonic() < deadline, [job(client, j) for j in job_ids]
            time.sleep(0.05)
    finally:
        pool.stop(timeout=10)


def _two_jobs(client: TestClient) -> list[str]:
    return [queued(client, "/api/surfaces", {**TINY, "train_size": n}) for n in (100, 120)]


@pytest.mark.usefixtures("pretend_cuda")
def test_cuda_worker_threads_take_turns_and_leave_jobs_queued(
    api: TestClient, data_dir: Path
) -> None:
    job_ids = _two_jobs(api)
    queue = api.app.state.queue  # type: ignore[attr-defined]
    active, most, running_seen, guard = [0], [0], [], threading.Lock()

    def runner(_plan: dict[str, Any], _ctx: JobContext) -> None:
        with guard:
            active[0] += 1
            most[0] = max(most[0], active[0])
        running_seen.append(sum(queue.get(j).status == "running" for j in job_ids))
        time.sleep(0.3)  # long enough for the idle thread to poll several times
        with guard:
            active[0] -= 1

    _run_pool(api, _pool(api, tiny_settings(data_dir, **GPU_WORKER), runner), job_ids)
    assert most[0] == 1 and running_seen == [1, 1]


def test_cpu_worker_threads_still_run_jobs_together(api: TestClient, data_dir: Path) -> None:
    job_ids = _two_jobs(api)
    together = threading.Barrier(2, timeout=10)

    def runner(_plan: dict[str, Any], _ctx: JobContext) -> None:
        together.wait()  # returns only when both jobs are running at once

    _run_pool(api, _pool(api, tiny_settings(data_dir, compute_device="cuda"), runner), job_ids)


def test_the_cuda_cache_is_freed_after_a_job_even_a_failed_one(
    api: TestClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    freed: list[bool] = []
    freed_before: list[bool] = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append(True))
    job_id = queued(api, "/api/surfaces", TINY)

    def runner(_plan: dict[str, Any], _ctx: JobContext) -> None:
        freed_before.extend(freed)
        raise RuntimeError("out of memory")

    state = api.app.state  # type: ignore[attr-defined]
    worker = Worker(
        state.queue, tiny_settings(data_dir), state.sessions, runners={JobKind.SURFACE: runner}
    )
    assert worker.run_once()
    assert job(api, job_id)["status"] == "failed" and freed == [True] and not freed_before
