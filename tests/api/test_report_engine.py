"""Report jobs run like surfaces: with the executing worker's engine options (device, GPUs,
processes, compile, backend, Ray address) and the recipe's precision, fp32 unless the request
asks otherwise, declared for the workers' device when planned and part of the report's id.

The library call is replaced by a recorder, so these see exactly what the runner passes it;
``test_gradient_flow_and_report.py`` runs a tiny report for real.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.planning.report import ReportPlan, plan_report
from api.runners import report as report_runner
from api.runners.base import JobContext, engine_options
from api.schemas.report import ReportRequest
from api.settings import Settings
from landscape.errors import SpecError
from landscape.specs import EngineOptions
from tests.api.test_api import tiny_settings
from tests.api.test_gradient_flow_and_report import TINY_REPORT

ENGINE: dict[str, Any] = {  # a worker's engine settings, none of them the defaults
    "engine_workers": 3,
    "engine_compile": True,
    "engine_devices": (0,),
    "engine_backend": "ray",
    "ray_address": "ray-head:6379",
}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """``reproduce``'s arguments, one entry per call (the package re-exports the function
    under its module's name: patch the module itself)."""
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    module = importlib.import_module("landscape.report.reproduce")
    monkeypatch.setattr(module, "reproduce", lambda *a, **kw: seen.append((a, kw)))
    return seen


def run_plan(plan: ReportPlan | dict[str, Any], settings: Settings) -> None:
    """Execute a stored plan as a worker of ``settings`` would."""
    context = JobContext(
        job_id="job",
        settings=settings,
        sessions=cast(Any, None),  # a report runner keeps no rows
        should_stop=lambda: False,
        report=lambda **_: None,
    )
    report_runner.run(plan if isinstance(plan, dict) else plan.to_json(), context)


def request(**changes: Any) -> ReportRequest:
    return ReportRequest(**{**TINY_REPORT, **changes})


def test_the_runner_passes_the_workers_engine_options(tmp_path: Path, calls: list[Any]) -> None:
    settings = tiny_settings(tmp_path / "data", **ENGINE)
    plan = plan_report(request(), settings)
    run_plan(plan, settings)
    ((spec, out), kwargs) = calls[0]
    options = kwargs["options"]
    assert options == engine_options(settings, "fp32")  # the surfaces' one function
    assert (options.devices, options.compile, options.backend, options.ray_address) == (
        (0,), True, "ray", "ray-head:6379",
    )  # fmt: skip
    assert (options.device, options.workers, options.precision) == ("cpu", 3, "fp32")
    assert (spec.device, spec.workers, spec.precision) == ("cpu", 3, "fp32")
    assert out == plan.out_dir and (out / "recipe.json").exists()


def test_precision_is_declared_when_planned_and_names_the_report(tmp_path: Path) -> None:
    cpu = tiny_settings(tmp_path / "data")
    default = plan_report(request(), cpu)
    assert default.precision == default.spec["precision"] == "fp32"
    assert plan_report(request(precision="fp32"), cpu).report_id == default.report_id
    with pytest.raises(SpecError, match=r"'tf32' needs a CUDA device.*COMPUTE_DEVICE.*cpu"):
        plan_report(request(precision="tf32"), cpu)  # the surfaces' rule
    gpu = tiny_settings(tmp_path / "data", compute_device="cuda")
    plans = {p: plan_report(request(precision=p), gpu) for p in ("fp32", "tf32", "bf16", "auto")}
    assert plans["auto"].spec["precision"] == "tf32"  # auto is resolved for the GPU workers
    assert plans["auto"].report_id == plans["tf32"].report_id
    assert plans["fp32"].report_id == default.report_id  # fp32 is fp32 on any device
    assert len({plans[p].report_id for p in ("fp32", "tf32", "bf16")}) == 3


def test_a_cpu_worker_refuses_a_tf32_report(tmp_path: Path, calls: list[Any]) -> None:
    plan = plan_report(
        request(precision="tf32"), tiny_settings(tmp_path / "data", compute_device="cuda")
    )
    with pytest.raises(SpecError, match=r"worker's device is cpu.*'tf32'"):
        run_plan(plan, tiny_settings(tmp_path / "data"))
    assert not calls and not plan.out_dir.exists()  # refused before any work or folder


def test_rows_planned_before_precision_was_a_recipe_value(tmp_path: Path, calls: list[Any]) -> None:
    """A stored plan whose recipe has no precision computes the one its row declared, or,
    older still, the engine's auto, as it did when it was planned."""
    settings = tiny_settings(tmp_path / "data")
    stored = plan_report(request(), settings).to_json()
    del stored["spec"]["precision"]
    for declared, expected in (("fp32", "fp32"), (None, "auto")):
        run_plan({**stored, "precision": declared}, settings)
        spec, options = calls[-1][0][0], calls[-1][1]["options"]
        assert spec.precision == options.precision == expected
        assert isinstance(options, EngineOptions)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(tiny_settings(tmp_path / "data"))) as test_client:
        yield test_client


def test_rest_reports_take_a_precision(client: TestClient) -> None:
    queued = client.post("/api/reports", json=TINY_REPORT)
    assert queued.status_code == 202, queued.text
    assert queued.json()["report"]["recipe"]["precision"] == "fp32"
    refused = client.post("/api/reports", json={**TINY_REPORT, "precision": "tf32"})
    assert refused.status_code == 422 and "needs a CUDA device" in refused.text
    unknown = client.post("/api/reports", json={**TINY_REPORT, "precision": "fp16"})
    assert unknown.status_code == 422 and "precision" in unknown.text
