"""The REST API in-process: real library end to end on tiny jobs, plus queue mechanics.

Workers are driven explicitly (``Worker.run_once`` or a thread) so each test controls when a job
runs. Fake runners stand in for the library only where timing must be controlled (cancel,
shutdown, claim races); the end-to-end tests run the real training and surface code.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

import landscape.errors as errors_module
from api.app import create_app
from api.db import Job, make_engine
from api.errors import status_for
from api.runners import surface as surface_runner
from api.runners.base import JobContext, JobKind, Runner
from api.schemas.surface import EXAMPLE_REQUEST
from api.settings import Settings
from api.worker import RUNNERS, Worker
from landscape.errors import CancelledError, LandscapeError, SpecError
from landscape.models import build

TINY: dict[str, Any] = {
    "model": "mlp-plain",
    "dataset": "digits",
    "train": {"epochs": 1},
    "train_size": 200,
    "grid": {"nx": 5, "ny": 5, "xrange": [-1, 1], "yrange": [-1, 1]},
    "directions": {"normalization": "filter", "ignore": "biasbn", "seed": 0},
}
DIGITS_SHAPE = {"in_channels": 1, "num_classes": 10, "image_size": 8}


def tiny_settings(data_dir: Path, **changes: Any) -> Settings:
    """Fast, quiet settings: CPU, no compile, one engine process, no background workers."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "workers": 0,
        "device": "cpu",
        "engine_workers": 1,
        "engine_compile": False,
        "progress_every_seconds": 0.0,
        "events_poll_seconds": 0.05,
        "poll_seconds": 0.05,
        "lease_seconds": 5.0,
        "cancel_wait_seconds": 5.0,
        "max_grid_points": 2000,
        "max_upload_bytes": 2_000_000,
        "api_token": None,
    }
    values.update(changes)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return tiny_settings(tmp_path / "data")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def worker_for(client: TestClient, runner: Runner | None = None) -> Worker:
    state = client.app.state  # type: ignore[attr-defined]
    if runner is None:
        return Worker(state.queue, state.settings, state.sessions)
    runners = {**RUNNERS, JobKind.SURFACE: runner}
    return Worker(state.queue, state.settings, state.sessions, runners=runners)


def run_all(client: TestClient) -> None:
    worker = worker_for(client)
    while worker.run_once():
        pass


# --------------------------------------------------------------------------- end to end


def test_issue_example_body_is_queued_as_is(client: TestClient) -> None:
    response = client.post("/api/surfaces", json=EXAMPLE_REQUEST)
    assert response.status_code == 202, response.text
    job = response.json()["job"]
    assert job["status"] == "queued" and job["progress"] == {"done": 0, "total": 441}
    assert job["surface_id"] and response.json()["surface"] is None


def test_job_runs_to_done_then_same_spec_is_cached(client: TestClient) -> None:
    first = client.post("/api/surfaces", json=TINY)
    assert first.status_code == 202, first.text
    job_id, surface_id = first.json()["job"]["id"], first.json()["job"]["surface_id"]
    run_all(client)

    job = client.get(f"/api/jobs/{job_id}").json()
    assert job["status"] == "done", job["error"]
    assert job["progress"] == {"done": 25, "total": 25} and job["surface_id"] == surface_id
    assert job["stage"] == "finished" and job["finished_at"]

    again = client.post("/api/surfaces", json=TINY)
    assert again.status_code == 200
    assert again.json()["surface"]["id"] == surface_id
    assert again.json()["surface"]["status"] == "complete"
    assert again.json()["job"]["id"] == job_id

    listed = client.get("/api/surfaces").json()
    assert [s["id"] for s in listed] == [surface_id]
    assert listed[0]["model"] == "mlp-plain" and listed[0]["dataset"] == "digits"
    assert listed[0]["metrics"] == ["train_loss", "train_acc"]

    trained = client.get("/api/checkpoints").json()
    assert len(trained) == 1 and trained[0]["source"] == "trained"


def test_arrays_are_ny_rows_of_nx_and_downsample(client: TestClient) -> None:
    body = {**TINY, "grid": {"nx": 5, "ny": 4, "xrange": [-1, 1], "yrange": [-0.5, 0.5]}}
    surface_id = client.post("/api/surfaces", json=body).json()["job"]["surface_id"]
    run_all(client)
    data = client.get(f"/api/surfaces/{surface_id}").json()
    assert len(data["x"]) == 5 and len(data["y"]) == 4
    loss = np.array(data["values"]["train_loss"], dtype=float)
    assert loss.shape == (4, 5) and np.isfinite(loss).all()
    assert data["y"][0] == -0.5 and data["x"][-1] == 1.0

    small = client.get(f"/api/surfaces/{surface_id}", params={"max_points": 3}).json()
    assert small["x"] == [-1.0, 0.0, 1.0] and len(small["y"]) == 3
    small_loss = np.array(small["values"]["train_loss"], dtype=float)
    assert small_loss.shape == (3, 3)
    np.testing.assert_allclose(small_loss[:, 0], loss[[0, 2, 3], 0])  # rows 0, 1.5→2, 3

    download = client.get(f"/api/surfaces/{surface_id}/file")
    assert download.status_code == 200
    path = Path(client.app.state.settings.data_dir) / "download.h5"  # type: ignore[attr-defined]
    path.write_bytes(download.content)
    with h5py.File(path, "r") as f:
        np.testing.assert_allclose(f["train_loss"][()], loss)

    page = client.get(f"/api/surfaces/{surface_id}/html")
    assert page.status_code == 200 and "plotly" in page.text.lower()


def test_one_dimensional_curve_is_a_flat_list(client: TestClient) -> None:
    body = {**TINY, "grid": {"nx": 7, "dim": 1}}
    surface_id = client.post("/api/surfaces", json=body).json()["job"]["surface_id"]
    run_all(client)
    data = client.get(f"/api/surfaces/{surface_id}").json()
    assert data["ndim"] == 1 and data["y"] is None
    assert len(data["values"]["train_loss"]) == 7
    assert all(isinstance(v, float) for v in data["values"]["train_loss"])


def test_partial_surface_has_nulls(client: TestClient) -> None:
    surface_id = client.post("/api/surfaces", json=TINY).json()["job"]["surface_id"]
    run_all(client)
    path = client.app.state.settings.surfaces_dir / f"{surface_id}.h5"  # type: ignore[attr-defined]
    with h5py.File(path, "r+") as f:  # pretend the last row is not computed yet
        f["train_loss"][-1, :] = np.nan
        f["train_acc"][-1, :] = np.nan
        f["computed"][-1, :] = 0
        f["train_loss"][0, :2] = [np.nan, np.inf]  # and two points diverged
        f.attrs["status"] = "partial"
    data = client.get(f"/api/surfaces/{surface_id}").json()
    assert data["status"] == "partial" and data["done"] == 20 and data["nonfinite"] == 2
    assert data["values"]["train_loss"][-1] == [None] * 5
    assert data["values"]["train_loss"][0][:2] == [None, None]
    listed = client.get("/api/surfaces").json()[0]
    assert (listed["done"], listed["nonfinite"], listed["precision"]) == (20, 2, "fp32")


def test_summary_carries_provenance(client: TestClient) -> None:
    surface_id = client.post("/api/surfaces", json=TINY).json()["job"]["surface_id"]
    run_all(client)
    summary = client.get(f"/api/surfaces/{surface_id}").json()
    provenance = summary["provenance"]
    assert set(provenance) == {"train", "final", "directions", "engine", "checkpoint_sha256"}
    assert provenance["directions"] == {
        "kind": "random", "normalization": "filter", "ignore": "biasbn", "seed": 0,
        "eigenvalues": None, "hessian_ends": "max", "params": [],
    }  # fmt: skip
    assert provenance["engine"]["precision"] == "fp32" and provenance["engine"]["device"]
    assert len(provenance["checkpoint_sha256"]) == 64
    train = provenance["train"]  # the recipe (TINY's one epoch, the library's defaults else)
    assert train["epochs"] == 1 and train["optimizer"] == "sgd" and train["lr"] == 0.1
    final = provenance["final"]
    assert set(final) == {"train_loss", "train_acc", "test_loss", "test_acc"}
    assert all(isinstance(final[k], float) for k in final)


def test_identical_concurrent_requests_share_one_job(client: TestClient) -> None:
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: client.post("/api/surfaces", json=TINY), range(8)))
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["job"]["id"] for r in responses}) == 1
    assert len(client.get("/api/jobs").json()) == 1
    other = client.post("/api/surfaces", json={**TINY, "directions": {"seed": 1}})
    assert other.json()["job"]["id"] != responses[0].json()["job"]["id"]


def test_events_stream_progress_then_done(client: TestClient) -> None:
    job_id = client.post("/api/surfaces", json=TINY).json()["job"]["id"]
    worker = worker_for(client)
    thread = threading.Thread(target=worker.run_once)
    events: list[tuple[str, dict[str, Any]]] = []
    with client.stream("GET", f"/api/jobs/{job_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        thread.start()
        event = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((event, json.loads(line.removeprefix("data: "))))
    thread.join()
    names = [name for name, _ in events]
    assert names[0] == "progress" and names[-1] == "done" and names.count("done") == 1
    assert set(names[:-1]) == {"progress"}
    assert events[-1][1]["progress"] == {"done": 25, "total": 25}
    stages = {data["stage"] for _, data in events}
    assert "finished" in stages and len(events) >= 3
    # Training progress travels in the events too, and stays on the job afterwards.
    assert all(data["train"]["epochs"] == 1 for _, data in events if data["stage"] == "training")
    assert events[-1][1]["train"]["epoch"] == 1
    assert isinstance(events[-1][1]["train"]["loss"], float)


def test_training_progress_is_on_the_job_while_it_trains(client: TestClient) -> None:
    """The real runner and trainer; the wrapped report reads the job back after each epoch."""
    job_id = client.post("/api/surfaces", json={**TINY, "train": {"epochs": 3}}).json()["job"]["id"]
    seen: list[dict[str, Any]] = []

    def runner(request: dict[str, Any], ctx: JobContext) -> None:
        report = ctx.report

        def reading_report(**values: Any) -> None:
            report(**values)
            if values.get("train"):
                seen.append(client.get(f"/api/jobs/{job_id}").json())

        ctx.report = reading_report
        surface_runner.run(request, ctx)

    assert worker_for(client, runner).run_once()
    assert [job["train"]["epoch"] for job in seen] == [0, 1, 2, 3]
    for job in seen:
        assert job["stage"] == "training" and job["progress"] == {"done": 0, "total": 25}
        assert job["train"]["epochs"] == 3
    assert seen[0]["train"]["loss"] is None and seen[0]["eta_seconds"] is None
    assert all(isinstance(job["train"]["loss"], float) for job in seen[1:])
    assert all(0 <= job["train"]["acc"] <= 1 for job in seen[1:])
    assert seen[1]["eta_seconds"] > 0 and seen[3]["eta_seconds"] == 0
    done = client.get(f"/api/jobs/{job_id}").json()
    assert done["status"] == "done" and done["train"] == seen[-1]["train"]


def test_checkpoint_jobs_have_no_training_progress(client: TestClient) -> None:
    job = client.post("/api/surfaces", json=TINY).json()["job"]
    assert job["train"] is None  # nothing reported yet


def test_throttle_lets_stage_changes_and_last_epoch_through(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path / "data", progress_every_seconds=3600.0)
    stored: list[tuple[str, Any]] = []

    def runner(_request: dict[str, Any], ctx: JobContext) -> None:
        def look() -> None:
            job = client.app.state.queue.get(ctx.job_id)  # type: ignore[attr-defined]
            stored.append((job.stage, (job.train_progress or {}).get("epoch")))

        for epoch in range(4):
            ctx.report(stage="training", train={"epoch": epoch, "epochs": 3})
            look()
        ctx.report(stage="computing", done=0, total=25)
        look()

    with TestClient(create_app(settings)) as client:
        client.post("/api/surfaces", json=TINY)
        assert worker_for(client, runner).run_once()
    # epoch 0 is a new stage; 1 and 2 are throttled; 3 is the last; computing is a new stage.
    training = [("training", 0), ("training", 0), ("training", 0), ("training", 3)]
    assert stored == [*training, ("computing", 3)]


def test_old_database_gains_the_new_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    with engine.begin() as connection:  # what a database made before `train_progress` has
        connection.exec_driver_sql("ALTER TABLE jobs DROP COLUMN train_progress")
        connection.exec_driver_sql(
            "INSERT INTO jobs (id, status, stage, surface_id, label, request, done, total, "
            "cancel_requested, attempts, created_at, updated_at) VALUES "
            "('"
            + "c" * 32
            + "', 'done', 'finished', '"
            + "c" * 20
            + "', '', '{}', 1, 1, 0, 1, 0, 0)"
        )
    engine.dispose()
    settings = tiny_settings(tmp_path / "data", database_url=url)
    with TestClient(create_app(settings)) as client:
        job = client.get("/api/jobs/" + "c" * 32).json()
    assert job["status"] == "done" and job["train"] is None


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"model": "resnet7"}, "unknown model 'resnet7'"),
        ({"dataset": "imagenet"}, "unknown data set 'imagenet'"),
        ({"dataset": "/etc/passwd.pt"}, "unknown data set"),
        ({"grid": {"nx": 100, "ny": 100}}, "larger than this server's limit of 2000"),
        ({"grid": {"nx": 5, "ny": 5, "xrange": [1, -1]}}, "xrange must be [min, max]"),
        ({"model": None, "checkpoint": "ab" * 16, "train": None}, "unknown checkpoint"),
        ({"checkpoint": "ab" * 16}, "exactly one of 'model'"),
        ({"model": None}, "exactly one of 'model'"),
        ({"train": {"epochs": 100000}}, "limit"),
        ({"colour": "red"}, "Extra inputs are not permitted"),
        ({"splits": ["validation"]}, "Input should be"),
    ],
)
def test_bad_requests_get_422_with_a_message(
    client: TestClient, change: dict[str, Any], words: str
) -> None:
    body = {k: v for k, v in {**TINY, **change}.items() if v is not None}
    response = client.post("/api/surfaces", json=body)
    assert response.status_code == 422, response.text
    assert words in json.dumps(response.json()["detail"]).replace('\\"', '"')


def test_unknown_ids_are_404_and_malformed_ids_422(client: TestClient) -> None:
    missing = "0123456789abcdef"
    for url in (
        f"/api/jobs/{missing}",
        f"/api/jobs/{missing}/events",
        f"/api/surfaces/{missing}",
        f"/api/surfaces/{missing}/file",
        f"/api/surfaces/{missing}/html",
    ):
        assert client.get(url).status_code == 404, url
    assert client.delete(f"/api/jobs/{missing}").status_code == 404
    assert client.delete(f"/api/surfaces/{missing}").status_code == 404
    for bad in ("..%2F..%2Fetc%2Fpasswd", "ZZZZZZZZZZ", "abc"):
        assert client.get(f"/api/surfaces/{bad}").status_code in (404, 422), bad


def test_every_library_error_has_an_http_status() -> None:
    classes = [
        obj
        for obj in vars(errors_module).values()
        if isinstance(obj, type) and issubclass(obj, LandscapeError)
    ]
    assert len(classes) >= 7
    for cls in classes:
        exc = cls("kind", "name", ["a"]) if cls.__name__ == "UnknownNameError" else cls("x")
        assert 400 <= status_for(exc) < 500, cls


# --------------------------------------------------------------------------- auth


def test_token_guards_mutations_and_optionally_reads(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path, api_token="s3cret")
    with TestClient(create_app(settings)) as client:
        assert client.post("/api/surfaces", json=TINY).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert client.post("/api/surfaces", json=TINY, headers=wrong).status_code == 401
        right = {"Authorization": "Bearer s3cret"}
        created = client.post("/api/surfaces", json=TINY, headers=right)
        assert created.status_code == 202
        job_id = created.json()["job"]["id"]
        assert client.delete(f"/api/jobs/{job_id}").status_code == 401
        assert client.get("/api/jobs").status_code == 200  # reads stay open
        assert client.delete(f"/api/jobs/{job_id}", headers=right).json()["status"] == "cancelled"

    settings = tiny_settings(tmp_path / "b", api_token="s3cret", protect_reads=True)
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/jobs").status_code == 401
        token = {"Authorization": "Bearer s3cret"}
        assert client.get("/api/jobs", headers=token).status_code == 200
        query = {"access_token": "s3cret"}  # for EventSource, which cannot send headers
        assert client.get("/api/jobs", params=query).status_code == 200
        assert client.post("/api/surfaces", json=TINY, params=query).status_code == 401
        assert client.get("/healthz").status_code == 200  # the health check never needs it


# --------------------------------------------------------------------------- uploads


def _upload(client: TestClient, name: str, content: bytes, model: str = "mlp-plain") -> Any:
    return client.post(
        "/api/checkpoints",
        files={"file": (name, content, "application/octet-stream")},
        data={"model": model, "dataset": "digits"},
    )


def _state_dict_bytes(**shape: int) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(build("mlp-plain", **{**DIGITS_SHAPE, **shape}).state_dict(), buffer)
    return buffer.getvalue()


def test_upload_state_dict_then_compute_its_surface(client: TestClient) -> None:
    content = _state_dict_bytes()
    response = _upload(client, "mine.pt", content)
    assert response.status_code == 201, response.text
    checkpoint = response.json()
    assert checkpoint["model"] == "mlp-plain" and checkpoint["source"] == "upload"
    assert _upload(client, "again.pt", content).json()["id"] == checkpoint["id"]
    assert [c["id"] for c in client.get("/api/checkpoints").json()] == [checkpoint["id"]]

    body = {"checkpoint": checkpoint["id"], "grid": {"nx": 3, "ny": 3}, "train_size": 100}
    created = client.post("/api/surfaces", json=body)
    assert created.status_code == 202, created.text
    run_all(client)
    job = client.get(f"/api/jobs/{created.json()['job']['id']}").json()
    assert job["status"] == "done", job["error"]


def test_upload_safetensors(client: TestClient) -> None:
    from safetensors.torch import save

    state = build("mlp-plain", **DIGITS_SHAPE).state_dict()
    response = _upload(client, "w.safetensors", save({k: v.contiguous() for k, v in state.items()}))
    assert response.status_code == 201, response.text


def test_upload_that_does_not_fit_the_model_is_422(client: TestClient) -> None:
    response = _upload(client, "wrong.pt", _state_dict_bytes(num_classes=3))
    assert response.status_code == 422
    assert "does not fit model 'mlp-plain'" in response.json()["detail"]
    assert _upload(client, "x.pt", b"not a checkpoint").status_code == 422
    assert _upload(client, "x.exe", _state_dict_bytes()).status_code == 422
    assert _upload(client, "x.pt", _state_dict_bytes(), model="gpt5").status_code == 422


class _Exploit:
    """Unpickling this would create a file: the upload path must never unpickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (Path.touch, (self.marker,))


def test_malicious_pickle_is_rejected_without_running(client: TestClient, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"weight": _Exploit(marker)})
    response = _upload(client, "evil.pt", payload)
    assert response.status_code == 422
    import io

    buffer = io.BytesIO()
    torch.save({"weight": _Exploit(marker)}, buffer)  # the torch zip format, same trick
    assert _upload(client, "evil2.pt", buffer.getvalue()).status_code == 422
    assert not marker.exists()
    assert client.get("/api/checkpoints").json() == []


def test_upload_size_limit_is_413(tmp_path: Path) -> None:
    with TestClient(create_app(tiny_settings(tmp_path, max_upload_bytes=1000))) as client:
        assert _upload(client, "big.pt", _state_dict_bytes()).status_code == 413


# --------------------------------------------------------------------------- queue mechanics


def _waiting_runner(started: threading.Event) -> Runner:
    """Stands in for the library: works in 'chunks' until should_stop, like compute_surface."""

    def runner(_request: dict[str, Any], ctx: JobContext) -> None:
        started.set()
        for done in range(1000):
            ctx.report(stage="computing", done=done, total=1000, eta=None)
            if ctx.should_stop():
                raise CancelledError("stopped")
            time.sleep(0.02)

    return runner


def test_cancel_queued_and_running_jobs(client: TestClient) -> None:
    queued = client.post("/api/surfaces", json=TINY).json()["job"]
    cancelled = client.delete(f"/api/jobs/{queued['id']}").json()
    assert cancelled["status"] == "cancelled"

    running = client.post("/api/surfaces", json=TINY).json()["job"]
    assert running["id"] != queued["id"]  # a cancelled job is not shared
    started = threading.Event()
    worker = worker_for(client, _waiting_runner(started))
    thread = threading.Thread(target=worker.run_once)
    thread.start()
    assert started.wait(10)
    t0 = time.monotonic()
    result = client.delete(f"/api/jobs/{running['id']}").json()
    thread.join(10)
    assert result["status"] == "cancelled" and time.monotonic() - t0 < 5
    assert result["progress"]["done"] > 0


def test_delete_surface_removes_file_and_listing(client: TestClient) -> None:
    surface_id = client.post("/api/surfaces", json=TINY).json()["job"]["surface_id"]
    run_all(client)
    path = client.app.state.settings.surfaces_dir / f"{surface_id}.h5"  # type: ignore[attr-defined]
    assert client.get(f"/api/surfaces/{surface_id}/html").status_code == 200
    assert client.delete(f"/api/surfaces/{surface_id}").status_code == 204
    assert not path.exists() and not path.with_suffix(".html").exists()
    assert client.get("/api/surfaces").json() == []
    assert client.get(f"/api/surfaces/{surface_id}").status_code == 404
    assert client.delete(f"/api/surfaces/{surface_id}").status_code == 404
    again = client.post("/api/surfaces", json=TINY)  # deleted means computed afresh
    assert again.status_code == 202


def test_delete_surface_while_its_job_is_active_is_409_until_cancelled(
    client: TestClient,
) -> None:
    job = client.post("/api/surfaces", json=TINY).json()["job"]
    surface_id = job["surface_id"]
    queued = client.delete(f"/api/surfaces/{surface_id}")
    assert queued.status_code == 409 and job["id"] in queued.json()["detail"]

    started = threading.Event()
    thread = threading.Thread(target=worker_for(client, _waiting_runner(started)).run_once)
    thread.start()
    assert started.wait(10)
    running = client.delete(f"/api/surfaces/{surface_id}")
    assert running.status_code == 409
    assert (
        "cancel the job first" in running.json()["detail"] and job["id"] in running.json()["detail"]
    )
    assert client.get(f"/api/jobs/{job['id']}").json()["status"] == "running"  # left alone

    assert client.delete(f"/api/jobs/{job['id']}").json()["status"] == "cancelled"
    thread.join(10)
    assert client.delete(f"/api/surfaces/{surface_id}").status_code == 204


def test_shutdown_requeues_the_running_job(client: TestClient) -> None:
    job_id = client.post("/api/surfaces", json=TINY).json()["job"]["id"]
    started = threading.Event()
    worker = worker_for(client, _waiting_runner(started))
    thread = threading.Thread(target=worker.run_once)
    thread.start()
    assert started.wait(10)
    deadline = time.monotonic() + 10
    while client.get(f"/api/jobs/{job_id}").json()["progress"]["done"] < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    worker.stop.set()  # what SIGTERM does
    thread.join(10)
    job = client.get(f"/api/jobs/{job_id}").json()
    assert job["status"] == "queued" and job["progress"]["done"] > 0


def test_failed_job_keeps_the_error(client: TestClient) -> None:
    def failing(_request: dict[str, Any], _ctx: JobContext) -> None:
        raise SpecError("the grid fell over")

    job_id = client.post("/api/surfaces", json=TINY).json()["job"]["id"]
    assert worker_for(client, failing).run_once()
    job = client.get(f"/api/jobs/{job_id}").json()
    assert job["status"] == "failed"
    assert re.fullmatch(r"the grid fell over \(error id [0-9a-f]{12}\)", job["error"])


def test_a_crashed_job_shows_one_line_without_traceback_or_paths(client: TestClient) -> None:
    def crashing(_request: dict[str, Any], _ctx: JobContext) -> None:
        raise RuntimeError(f"boom in {Path(__file__).resolve()}\nTraceback (most recent call last)")

    job_id = client.post("/api/surfaces", json=TINY).json()["job"]["id"]
    assert worker_for(client, crashing).run_once()
    error = client.get(f"/api/jobs/{job_id}").json()["error"]
    assert re.fullmatch(r"internal error \(RuntimeError\) \(error id [0-9a-f]{12}\)", error)


def test_workers_never_claim_the_same_job(client: TestClient) -> None:
    state = client.app.state  # type: ignore[attr-defined]
    with state.sessions() as session:
        for index in range(40):
            session.add(Job(id=f"{index:032x}", surface_id=f"{index:020x}", request={}))
        session.commit()
    claims: list[str] = []
    lock = threading.Lock()

    def claim_all() -> None:
        worker = worker_for(client)
        while (job := state.queue.claim(worker.id)) is not None:
            with lock:
                claims.append(job.id)

    threads = [threading.Thread(target=claim_all) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claims) == [f"{index:032x}" for index in range(40)]


def test_lapsed_lease_and_dead_local_worker_are_recovered(client: TestClient) -> None:
    state = client.app.state  # type: ignore[attr-defined]
    with state.sessions() as session:
        session.add(
            Job(
                id="a" * 32,
                surface_id="a" * 20,
                request={},
                status="running",
                worker_id="elsewhere:1:x",
                lease_expires_at=time.time() - 1,
            )
        )
        session.add(
            Job(
                id="b" * 32,
                surface_id="b" * 20,
                request={},
                status="running",
                worker_id="elsewhere:1:y",
                lease_expires_at=time.time() + 600,
            )
        )
        session.commit()
    import socket

    dead = f"{socket.gethostname()}:999999:z"  # no such pid
    with state.sessions() as session:
        session.add(
            Job(
                id="c" * 32,
                surface_id="c" * 20,
                request={},
                status="running",
                worker_id=dead,
                lease_expires_at=time.time() + 600,
            )
        )
        session.commit()
    assert state.queue.recover(set()) == 1
    assert state.queue.get("c" * 32).status == "queued"
    first = state.queue.claim("me:1:a")
    second = state.queue.claim("me:1:a")
    assert {first.id, second.id} == {"a" * 32, "c" * 32}  # b's live lease is respected
    assert state.queue.claim("me:1:a") is None


# --------------------------------------------------------------------------- catalogue, web


def test_catalogue_health_docs_and_web(client: TestClient) -> None:
    models = {m["name"] for m in client.get("/api/models").json()}
    assert {"resnet20", "resnet20-noshort", "resnet56-noshort", "mlp-plain"} <= models
    datasets = {d["name"]: d for d in client.get("/api/datasets").json()}
    assert datasets["digits"]["available"] and datasets["digits"]["image_size"] == 8
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["jobs"]["queued"] == 0
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    body = schema["components"]["schemas"]["SurfaceRequest"]
    assert EXAMPLE_REQUEST in body["examples"]
    assert client.get("/").status_code == 200
    js = client.get("/vendor/plotly.min.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert len(js.content) > 1_000_000


def test_demo_queues_each_surface_once(client: TestClient) -> None:
    from api.demo import CLOSE_GRID, DEMO_MODELS, demo_requests, enqueue_demo

    first = enqueue_demo(client.app)  # type: ignore[arg-type]
    again = enqueue_demo(client.app)  # type: ignore[arg-type]
    assert first == again and len(set(first)) == len(demo_requests()) == len(DEMO_MODELS) + 2
    jobs = client.get("/api/jobs").json()
    assert sorted(j["surface_id"] for j in jobs) == sorted(first)
    assert {j["request"]["model"] for j in jobs} == set(DEMO_MODELS)
    wanted = CLOSE_GRID["xrange"]
    close = [j["request"]["model"] for j in jobs if j["request"]["grid"]["xrange"] == wanted]
    assert sorted(close) == ["resnet56", "resnet56-noshort"]  # the range where they differ


def test_cli_parses_serve_and_worker() -> None:
    from landscape.cli import build_parser
    from landscape.cli.serve_cmd import overrides

    args = build_parser().parse_args(["serve", "--port", "9001", "--workers", "2", "--demo"])
    assert overrides(args) == {"port": 9001, "workers": 2} and args.demo
    args = build_parser().parse_args(["worker", "--device", "cpu"])
    assert args.device == "cpu"


def test_access_log_never_shows_the_query_token() -> None:
    from api.app import RedactTokens

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:1", "GET", "/api/jobs/x/events?access_token=s3cret&a=1", "1.1", 200),
        None,
    )
    assert RedactTokens().filter(record)
    message = record.getMessage()
    assert "s3cret" not in message and "access_token=***&a=1" in message


def test_a_damaged_file_is_isolated_and_recomputed(client: TestClient) -> None:
    """A truncated file and a byte-corrupted one: the list still answers, each GET is a 410
    saying what to do, and posting the request again recomputes instead of refusing."""
    good = client.post("/api/surfaces", json=TINY).json()["job"]["surface_id"]
    body = {**TINY, "directions": {"seed": 1}}
    bad = client.post("/api/surfaces", json=body).json()["job"]["surface_id"]
    run_all(client)
    folder = client.app.state.settings.surfaces_dir  # type: ignore[attr-defined]
    path = folder / f"{bad}.h5"
    for damage in ("truncate", "corrupt"):
        blob = path.read_bytes()
        if damage == "truncate":
            path.write_bytes(blob[: len(blob) // 3])
        else:
            path.write_bytes(blob[:512] + bytes(len(blob) - 1024) + blob[-512:])
        listed = {s["id"]: s for s in client.get("/api/surfaces").json()}
        assert listed[good]["status"] == "complete"
        assert listed[bad]["status"] == "unreadable" and "POST" in listed[bad]["error"]
        reply = client.get(f"/api/surfaces/{bad}")
        assert reply.status_code == 410 and "unreadable" in reply.json()["detail"]
        assert str(folder) not in reply.json()["detail"]
        again = client.post("/api/surfaces", json=body)
        assert again.status_code == 202 and again.json()["job"]["surface_id"] == bad
        run_all(client)
        assert client.get(f"/api/surfaces/{bad}").json()["status"] == "complete"
    assert len(list(folder.glob(f"{bad}.h5.unreadable-*"))) >= 1  # kept for inspection


def test_a_file_deleted_under_its_job_fails_the_job_visibly(client: TestClient) -> None:
    job_id = client.post("/api/surfaces", json=TINY).json()["job"]["id"]
    folder = client.app.state.settings.surfaces_dir  # type: ignore[attr-defined]

    def runner(plan: dict[str, Any], ctx: JobContext) -> None:
        report = ctx.report

        def deleting_report(**values: Any) -> None:
            report(**values)
            if values.get("stage") == "computing" and (values.get("done") or 0) > 0:
                for path in folder.glob("*.h5"):
                    path.unlink()

        ctx.report = deleting_report
        surface_runner.run(plan, ctx)

    assert worker_for(client, runner).run_once()
    job = client.get(f"/api/jobs/{job_id}").json()
    assert job["status"] == "failed" and "deleted, truncated or replaced" in job["error"]
    surface_id = job["surface_id"]
    assert client.get(f"/api/surfaces/{surface_id}").status_code == 404
    assert client.post("/api/surfaces", json=TINY).status_code == 202  # and it can be redone
