"""A budget on every job, checked before it is queued (in-process): every job kind counts in the
queue limits (a report as one job), model arguments are the builder's own within its
declared ranges, each job's estimated FLOPs, memory and parameters are checked against the
server's budgets, request types are strict and non-finite numbers refused by every schema, a
duplicate Content-Type is a 400, and a report's folder lives only as long as it holds
something."""

from __future__ import annotations

import importlib
import math
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from pydantic import BaseModel, ValidationError

from api.app import create_app
from api.planning.cost import SPLIT_SIZES, net_cost
from api.runners.base import JobKind
from api.schemas.gradient_flow import GradientFlowRequest
from api.schemas.hessian import HessianRequest
from api.schemas.report import ReportRequest
from api.schemas.surface import DirectionsRequest, GridRequest, SurfaceRequest, TrainRecipe
from api.settings import Settings
from api.worker import RUNNERS, Worker
from landscape.data import list_datasets
from landscape.errors import CancelledError, SpecError
from landscape.models import build, check_model_args, register_model
from landscape.report.recipe import ReproduceSpec
from tests.api.test_api import TINY, tiny_settings
from tests.api.test_gradient_flow_and_report import TINY_REPORT

MLP_PAIR = [["mlp-residual", "mlp-plain"]]


def _client(tmp_path: Path, **changes: Any) -> TestClient:
    return TestClient(create_app(tiny_settings(tmp_path / "data", **changes)))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with _client(tmp_path, max_active_jobs_per_client=50, max_active_jobs=50) as test_client:
        yield test_client


def _state(client: TestClient) -> Any:
    return client.app.state  # type: ignore[attr-defined]


def _reports_dir(client: TestClient) -> Path:
    settings: Settings = _state(client).settings
    return settings.reports_dir


def _jobs(client: TestClient) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = client.get("/api/jobs").json()
    return jobs


def _run_all(client: TestClient, runners: dict[JobKind, Any] | None = None) -> None:
    state = _state(client)
    worker = Worker(
        state.queue, state.settings, state.sessions, runners={**RUNNERS, **(runners or {})}
    )
    while worker.run_once():
        pass


def _complete_surface(client: TestClient) -> str:
    queued = client.post("/api/surfaces", json=TINY)
    assert queued.status_code == 202, queued.text
    _run_all(client)
    job = client.get(f"/api/jobs/{queued.json()['job']['id']}").json()
    assert job["status"] == "done", job["error"]
    return str(job["surface_id"])


# ------------------------------------------------------------- 1. every kind in the queue limits


def test_reports_count_in_the_per_client_limit(tmp_path: Path) -> None:
    with _client(tmp_path, max_active_jobs_per_client=10, max_active_jobs=100) as client:
        for i in range(10):
            body = {**TINY, "train_size": 100 + i}
            assert client.post("/api/surfaces", json=body).status_code == 202
        refused = client.post("/api/reports", json=TINY_REPORT)
        assert refused.status_code == 429, refused.text
        assert "10 per client" in refused.json()["detail"] and refused.headers["retry-after"]
        assert not client.get("/api/reports").json()


def test_gradient_flow_and_hessian_submissions_are_queue_limited(tmp_path: Path) -> None:
    with _client(tmp_path, max_active_jobs_per_client=1, max_active_jobs=100) as client:
        assert client.post("/api/surfaces", json=TINY).status_code == 202
        for kind in ("gradient-flow", "hessian"):
            refused = client.post(f"/api/surfaces/{'a' * 20}/{kind}", json={"top": 1})
            assert refused.status_code == 429, (kind, refused.text)


def test_a_report_request_alone_leaves_no_folder(client: TestClient) -> None:
    queued = client.post("/api/reports", json=TINY_REPORT)
    assert queued.status_code == 202
    report_id = queued.json()["report"]["id"]
    assert not list(_reports_dir(client).glob("*"))
    listed = client.get("/api/reports").json()
    assert [r["id"] for r in listed] == [report_id] and listed[0]["status"] == "pending"
    client.delete(f"/api/jobs/{queued.json()['job']['id']}")
    assert client.get("/api/reports").json() == []
    assert client.delete(f"/api/reports/{report_id}").status_code == 404
    assert not list(_reports_dir(client).glob("*"))


def _stopping_runner(client: TestClient, write: str | None, error: Exception) -> Any:
    """The real report runner, with ``reproduce`` making its folders (and ``write``) and then
    raising ``error``; a ``CancelledError`` comes after a cancel of the job, as it would."""
    from api.runners import report as report_runner

    def fake_reproduce(_spec: Any, out_dir: Path, **_: Any) -> None:
        for sub in ("checkpoints", "surfaces", "analysis"):
            (out_dir / sub).mkdir(parents=True, exist_ok=True)
        if write is not None:
            (out_dir / write).write_bytes(b"partial")
        raise error

    def run(plan: dict[str, Any], ctx: Any) -> None:
        if isinstance(error, CancelledError):
            _state(client).queue.cancel(ctx.job_id)
        library = importlib.import_module("landscape.report.reproduce")  # the module, not
        with pytest.MonkeyPatch.context() as patch:  # the function the package exports
            patch.setattr(library, "reproduce", fake_reproduce)
            report_runner.run(plan, ctx)

    return run


@pytest.mark.parametrize(
    ("error", "status"), [(CancelledError("stopped"), "cancelled"), (RuntimeError("x"), "failed")]
)
def test_a_report_that_ends_without_output_removes_its_folder(
    client: TestClient, error: Exception, status: str
) -> None:
    job_id = client.post("/api/reports", json=TINY_REPORT).json()["job"]["id"]
    _run_all(client, {JobKind.REPORT: _stopping_runner(client, None, error)})
    assert client.get(f"/api/jobs/{job_id}").json()["status"] == status
    assert not list(_reports_dir(client).glob("*"))
    assert client.get("/api/reports").json() == []


def test_delete_report_removes_it_and_is_409_while_its_job_runs(client: TestClient) -> None:
    queued = client.post("/api/reports", json=TINY_REPORT).json()
    report_id, job_id = queued["report"]["id"], queued["job"]["id"]
    busy = client.delete(f"/api/reports/{report_id}")
    assert busy.status_code == 409 and f"DELETE /api/jobs/{job_id}" in busy.json()["detail"]
    partial = "checkpoints/mlp-plain-s0.pt.partial"
    _run_all(client, {JobKind.REPORT: _stopping_runner(client, partial, RuntimeError("boom"))})
    folder = _reports_dir(client) / report_id
    assert (folder / partial).exists()  # something to resume from: kept, and listed
    assert [r["id"] for r in client.get("/api/reports").json()] == [report_id]
    assert client.delete(f"/api/reports/{report_id}").status_code == 204
    assert not folder.exists() and client.get("/api/reports").json() == []
    assert client.delete(f"/api/reports/{report_id}").status_code == 404
    assert client.delete(f"/api/reports/{'f' * 16}").status_code == 404


# ------------------------------------------------------------- 2. model arguments


@pytest.mark.parametrize(
    ("model_args", "needle"),
    [
        ({"width": 1_000_000}, "'width' of model 'mlp-residual' must be in [1, 1024]"),
        ({"bogus": 1}, "takes no argument 'bogus'; its arguments: activation, depth, init, width"),
        ({"depth": -5}, "'depth' of model 'mlp-residual' must be in [1, 64]"),
        ({"width": 2**70}, "an integer of 71 bits"),
        ({"in_channels": 3}, "set by the data set"),
    ],
)
def test_report_model_args_are_checked_before_queueing(
    client: TestClient, model_args: dict[str, int], needle: str
) -> None:
    body = {**TINY_REPORT, "pairs": MLP_PAIR, "model_args": model_args}
    refused = client.post("/api/reports", json=body)
    assert refused.status_code == 422 and needle in refused.json()["detail"], refused.text
    assert _jobs(client) == [] and not list(_reports_dir(client).glob("*"))


def test_model_args_for_nets_without_them_name_the_valid_ones(client: TestClient) -> None:
    refused = client.post("/api/reports", json={"model_args": {"width": 16}})
    assert refused.status_code == 422
    assert "'resnet20' takes no argument 'width'; its arguments: shortcut" in refused.text


def test_check_model_args_in_the_library() -> None:
    check_model_args("mlp-plain", {"depth": 2, "width": 8})
    check_model_args("resnet20", {"shortcut": "projection"})
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("mlp-plain", {"width": True}, "must be an integer, got True"),
        ("mlp-plain", {"width": 8.0}, "must be an integer, got 8.0"),
        ("resnet20-noshort", {"shortcut": "projection"}, "its arguments: none"),
        ("densenet-bc-40", {"growth": 100}, "must be in [1, 48]"),
        ("resnet20", {"shortcut": "x" * 500}, "at most 100 characters"),
        ("resnet20", {"shortcut": 3}, "must be a string"),
    ]
    for name, args, needle in cases:
        with pytest.raises(SpecError, match=re.escape(needle)):
            check_model_args(name, args)
    with pytest.raises(SpecError, match="must be in"):  # build checks before constructing
        build("mlp-plain", width=10**6)


def _undeclared(
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    width: int = 4,
    gain: float = 0.5,
    free: Any = None,
) -> Any:
    raise AssertionError("never built")


def test_a_model_without_declared_ranges_gets_generic_bounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import landscape.models as models

    monkeypatch.setitem(models._REGISTRY, "test-undeclared", (_undeclared, "no ranges"))
    check_model_args("test-undeclared", {"width": 65536, "gain": -2, "free": "x"})
    cases: list[tuple[dict[str, Any], str]] = [
        ({"width": 65537}, "'width' of model 'test-undeclared' must be in [-65536, 65536]"),
        ({"width": 2.0}, "must be an integer, got 2.0"),
        ({"gain": math.nan}, "must be in [-1000000.0, 1000000.0], got nan"),
        ({"gain": 10**400}, "an integer of 1329 bits"),
        ({"free": [1]}, "must be a number, a string or true/false, got list"),
        ({"depth": 3}, "its arguments: free, gain, width"),
    ]
    for args, needle in cases:
        with pytest.raises(SpecError, match=re.escape(needle)):
            check_model_args("test-undeclared", args)


def test_register_model_refuses_ranges_for_arguments_it_lacks() -> None:
    def builder(*, in_channels: int, num_classes: int, image_size: int, width: int = 4) -> Any:
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="depth"):
        register_model("test-budgets-net", "x", arg_ranges={"depth": (1, 2)})(builder)


def test_cli_train_refuses_a_bad_model_arg_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from landscape.cli import main

    args = ["train", "--model", "mlp-plain", "--dataset", "digits", "--epochs", "1",
            "--device", "cpu", "--out", str(tmp_path / "m.pt")]  # fmt: skip
    assert main([*args, "--model-arg", "bogus=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        "takes no argument 'bogus'; its arguments: activation, depth, init, width" in err
        and "\n" not in err
    )
    assert main([*args, "--model-arg", "width=100000"]) == 2
    assert "must be in [1, 1024]" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


# ------------------------------------------------------------- 2. budgets


def test_cost_model_counts_on_the_meta_device_without_memory_or_rng() -> None:
    state = torch.get_rng_state()
    before = _rss()
    cost = net_cost("mlp-plain", {"depth": 64, "width": 1024}, (1, 8, 10))
    assert cost.params == 64 * 2 * (1024 * 1024 + 1024) + (64 * 1024 + 1024) + (1024 * 10 + 10)
    assert cost.flops == 2 * (64 + 64 * 2 * 1024 + 10) * 1024  # 2 FLOPs per multiply-add
    assert cost.activation_bytes > 0
    assert _rss() - before < 100 * 2**20  # 134 M float32 weights would be 540 MB
    assert torch.equal(torch.get_rng_state(), state)  # a worker's seeded training is unaffected


def test_costing_reaches_no_other_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A job worker thread of ``landscape serve`` runs real models while the API costs others:
    the costing installs no process-wide module hook and its meta device stays its own."""
    import torch.nn.modules.module as module_hooks

    def refuse(*_: Any) -> Any:
        raise AssertionError("a process-wide module hook was installed")

    monkeypatch.setattr(module_hooks, "register_module_forward_pre_hook", refuse)
    monkeypatch.setattr(module_hooks, "register_module_forward_hook", refuse)
    monkeypatch.setattr("torch.utils.module_tracker.register_module_forward_pre_hook", refuse)
    seen: set[torch.device] = set()
    done = threading.Event()

    def worker() -> None:  # a job's forward passes, all along the costing
        layer = torch.nn.Linear(4, 4)
        while not done.is_set():
            seen.add(layer(torch.ones(1, 4)).device)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        for growth in (11, 13):  # uncached: built now
            net_cost("densenet-bc-40", {"growth": growth}, (1, 8, 10))
    finally:
        done.set()
        thread.join(10)
    assert seen == {torch.device("cpu")}


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_every_registered_data_set_has_its_split_sizes() -> None:
    assert {info.name for info in list_datasets()} <= set(SPLIT_SIZES)


def test_an_over_budget_report_is_refused_naming_budget_and_estimate(tmp_path: Path) -> None:
    with _client(tmp_path, max_job_flops=1e12) as client:
        assert client.post("/api/reports", json=TINY_REPORT).status_code == 202
        refused = client.post("/api/reports", json={})  # the documented recipe: ~1e14
        assert refused.status_code == 422, refused.text
        detail = refused.json()["detail"]
        assert "LANDSCAPE_MAX_JOB_FLOPS = 1e+12" in detail
        parsed = re.search(
            r"estimated ([\d.e+]+) FLOPs \(trainings ([\d.e+]+), surfaces ([\d.e+]+), "
            r"analyses ([\d.e+]+)\)",
            detail,
        )
        assert parsed, detail
        total, trainings, surfaces, analyses = (float(value) for value in parsed.groups())
        # The recipe's arithmetic (the refusal prints two digits): each net trained per seed,
        # a full pass per point of each range for the surface seeds, on the 1,437 digits.
        recipe, shape = ReproduceSpec(), (1, 8, 10)
        forward = {model: net_cost(model, {}, shape).flops for model in recipe.models}
        n = SPLIT_SIZES["digits"]["train"]
        points = sum(p * p for _, p in recipe.ranges)
        trained = sum(3 * f * n * recipe.epochs * len(recipe.seeds) for f in forward.values())
        computed = sum(f * n * points * recipe.surface_seeds for f in forward.values())
        assert trainings == pytest.approx(trained, rel=0.05)
        assert surfaces == pytest.approx(computed, rel=0.05)
        assert analyses > 0 and total == pytest.approx(trainings + surfaces + analyses, rel=0.05)
        assert "on this deployment, at the assumed rate" in detail  # and what to reduce:
        assert detail.endswith(
            "ask for fewer pairs, seeds, epochs or surface ranges, or a smaller train_size"
        )
        assert len(_jobs(client)) == 1


@pytest.mark.parametrize(
    ("budget", "needle"),
    [
        ({"max_model_params": 100_000}, "LANDSCAPE_MAX_MODEL_PARAMS = 100,000"),
        ({"max_job_memory_bytes": 2**20}, "LANDSCAPE_MAX_JOB_MEMORY_BYTES = 0.000977 GiB"),
        ({"max_job_flops": 1e9}, "LANDSCAPE_MAX_JOB_FLOPS = 1e+09"),
    ],
)
def test_an_over_budget_surface_is_refused(
    tmp_path: Path, budget: dict[str, Any], needle: str
) -> None:
    with _client(tmp_path, **budget) as client:
        refused = client.post("/api/surfaces", json=TINY)  # mlp-plain: 141,706 parameters
        assert refused.status_code == 422 and needle in refused.json()["detail"], refused.text
        assert "on this deployment" in refused.json()["detail"]
        assert _jobs(client) == []


def test_over_budget_analyses_are_refused(tmp_path: Path) -> None:
    with _client(tmp_path) as client:
        surface_id = _complete_surface(client)
        settings: Settings = _state(client).settings
        settings.max_job_flops = 1e8  # tighten the budget once the surface is there
        hessian = client.post(f"/api/surfaces/{surface_id}/hessian", json={"top": 3})
        assert (
            hessian.status_code == 422 and "this Hessian analysis is an estimated" in hessian.text
        )
        flow = client.post(f"/api/surfaces/{surface_id}/gradient-flow", json={})
        assert flow.status_code == 422 and "this gradient flow is an estimated" in flow.text
        assert "ask for a smaller train_size" in flow.text and "fewer eigenvalues" in hessian.text
        settings.max_job_flops = 1e12
        queued = client.post(f"/api/surfaces/{surface_id}/hessian", json={"top": 1})
        assert queued.status_code == 202, queued.text
        _run_all(client)
        settings.max_job_flops = 1e8  # what is stored is served whatever the budgets say
        again = client.post(f"/api/surfaces/{surface_id}/hessian", json={"top": 1})
        assert again.status_code == 200, again.text
        cached = client.post("/api/surfaces", json=TINY)
        assert cached.status_code == 200 and cached.json()["surface"]["id"] == surface_id


def test_config_lists_the_budgets(client: TestClient) -> None:
    config = client.get("/api/config").json()
    assert config["budgets"] == {
        "max_job_flops": 5e14,
        "max_job_memory_bytes": 8 * 2**30,
        "max_model_params": 20_000_000,
    }
    assert config["limits"]["max_active_jobs_per_client"] == 50


# ------------------------------------------------------------- 5. non-finite numbers, headers


def test_two_content_types_are_400(client: TestClient) -> None:
    body = b'{"pairs": [["mlp-residual", "mlp-plain"]], "ranges": [[NaN, 3]]}'
    headers = [("content-type", "application/json"), ("content-type", "text/plain")]
    for path in ("/api/reports", "/api/surfaces", "/api/jobs/abc"):
        answer = client.post(path, content=body, headers=headers)
        assert answer.status_code == 400, (path, answer.text)
        assert "more than one Content-Type" in answer.json()["detail"]
    assert _jobs(client) == []


REQUEST_MODELS: list[type[BaseModel]] = [
    SurfaceRequest,
    TrainRecipe,
    GridRequest,
    DirectionsRequest,
    HessianRequest,
    GradientFlowRequest,
    ReportRequest,
]
NAN, INF = float("nan"), float("inf")
# Every float a request carries (the Hessian and gradient-flow requests have none), NaN or
# infinite, validated by the schema alone: no guard in front, whatever the headers said.
NON_FINITE_BODIES: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (TrainRecipe, {"lr": NAN}),
    (TrainRecipe, {"momentum": INF}),
    (TrainRecipe, {"weight_decay": -INF}),
    (GridRequest, {"xrange": [NAN, 1]}),
    (GridRequest, {"yrange": [-1, INF]}),
    (SurfaceRequest, {"model": "mlp-plain", "grid": {"xrange": [-INF, 1]}}),
    (SurfaceRequest, {"model": "mlp-plain", "train": {"lr": NAN}}),
    (ReportRequest, {"ranges": [[NAN, 3]]}),
    (ReportRequest, {"ranges": [[INF, 3]]}),
]


@pytest.mark.parametrize(("model", "body"), NON_FINITE_BODIES)
def test_every_request_schema_refuses_non_finite_numbers(
    model: type[BaseModel], body: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError, match="finite"):
        model.model_validate(body)


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (HessianRequest, {"top": NAN}),
        (HessianRequest, {"train_size": INF}),
        (GradientFlowRequest, {"train_size": NAN}),
        (ReportRequest, {"epochs": INF}),
        (DirectionsRequest, {"seed": NAN}),
    ],
)
def test_non_finite_numbers_are_no_integers(model: type[BaseModel], body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(body)


def test_every_request_model_is_strict() -> None:
    from api.schemas.common import Strict

    for model in REQUEST_MODELS:
        assert issubclass(model, Strict) and model.model_config.get("strict") is True, model


# ------------------------------------------------------------- 7. strict types, bounds


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/reports", {**TINY_REPORT, "epochs": "1"}),
        ("/api/reports", {**TINY_REPORT, "epochs": True}),
        ("/api/reports", {**TINY_REPORT, "seeds": [True]}),
        ("/api/reports", {**TINY_REPORT, "ranges": [["0.25", 3]]}),
        ("/api/reports", {**TINY_REPORT, "model_args": {"width": "8"}}),
        ("/api/surfaces", {**TINY, "train": {"epochs": "1"}}),
        ("/api/surfaces", {**TINY, "train": {"epochs": True}}),
        ("/api/surfaces", {**TINY, "grid": {"nx": 5, "ny": 5, "xrange": ["0", "1"]}}),
        ("/api/surfaces", {**TINY, "grid": {"nx": 5, "dim": True}}),
        ("/api/surfaces", {**TINY, "train_size": 200.0}),
        ("/api/surfaces/" + "a" * 20 + "/hessian", {"top": True}),
        ("/api/surfaces/" + "a" * 20 + "/hessian", {"top": 1, "trace": 1}),
        ("/api/surfaces/" + "a" * 20 + "/hessian", {"top": 1, "train_size": 10**20}),
        ("/api/surfaces/" + "a" * 20 + "/hessian", {"top": 1, "train_size": 1e20}),
        ("/api/surfaces/" + "a" * 20 + "/gradient-flow", {"train_size": "5"}),
    ],
)
def test_loose_types_and_unbounded_numbers_are_422(
    client: TestClient, path: str, body: dict[str, Any]
) -> None:
    answer = client.post(path, json=body)
    assert answer.status_code == 422, (path, body, answer.text)
    assert isinstance(answer.json()["detail"], list)  # the schema's answer, before any route
    assert _jobs(client) == []


def test_strict_types_still_take_json_numbers_and_arrays(client: TestClient) -> None:
    body = {**TINY, "grid": {"nx": 5, "ny": 5, "xrange": [-1, 1], "yrange": [-0.5, 1]}}
    assert client.post("/api/surfaces", json={**body, "train": {"epochs": 1, "lr": 1}}).is_success
    report = {**TINY_REPORT, "ranges": [[1, 3]], "pairs": MLP_PAIR}
    assert client.post("/api/reports", json=report).status_code == 202
