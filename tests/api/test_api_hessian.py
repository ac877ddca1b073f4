"""``/api/surfaces/{id}/hessian``: the curvature analysis as a job, end to end on a tiny model.

The numbers the API stores are checked against ``landscape.analysis.hessian_spectrum`` run
directly on the same checkpoint and data, so the service adds plumbing, never arithmetic.
Workers are driven explicitly, as in ``test_api.py`` (whose helpers this reuses).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from api.app import create_app
from api.db import make_engine
from api.runners import hessian as hessian_runner
from api.runners.base import JobContext, JobKind
from api.worker import RUNNERS, Worker
from landscape import storage as store
from landscape.analysis import HessianOperator, LanczosOptions, hessian_spectrum
from landscape.analysis.plane_curvature import plane_summary
from landscape.analysis.spectral_density import spectral_density
from landscape.data import load_data
from landscape.sources.checkpoint import load_checkpoint
from landscape.specs import DataSpec
from tests.api.test_api import TINY, run_all, tiny_settings

ANALYSIS: dict[str, Any] = {
    "top": 2,
    "bottom": 1,
    "trace": True,
    "trace_samples": 4,
    "curvature_grid": 3,
}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """The TINY net's products are small: on a busy 2-core box two intra-op threads only
    contend (0.9 s a product against 0.015 s on one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(tiny_settings(tmp_path / "data"))) as test_client:
        yield test_client


def computed_surface(client: TestClient) -> str:
    """The id of the TINY surface, computed (5×5 grid of a 1-epoch MLP on 200 digits)."""
    reply = client.post("/api/surfaces", json=TINY).json()
    surface_id: str = reply["surface"]["id"] if reply["surface"] else reply["job"]["surface_id"]
    run_all(client)
    return surface_id


def _checkpoint(client: TestClient) -> Path:
    (record,) = client.get("/api/checkpoints").json()
    settings = client.app.state.settings  # type: ignore[attr-defined]
    return Path(settings.checkpoints_dir) / f"{record['id']}.pt"


def test_analysis_runs_and_matches_the_library(client: TestClient) -> None:
    surface_id = computed_surface(client)
    reply = client.post(f"/api/surfaces/{surface_id}/hessian", json=ANALYSIS)
    assert reply.status_code == 202, reply.text
    job = reply.json()["job"]
    assert reply.json()["hessian"] is None
    assert job["kind"] == "hessian" and job["surface_id"] == surface_id
    assert job["progress"] == {"done": 0, "total": 1 + 3 * 3}  # spectrum + 3×3 map points
    assert client.get(f"/api/surfaces/{surface_id}").json()["hessian"] is None
    run_all(client)

    job = client.get(f"/api/jobs/{job['id']}").json()
    assert job["status"] == "done", job["error"]
    assert job["progress"] == {"done": 10, "total": 10}

    model, _ = load_checkpoint(_checkpoint(client))
    data = load_data(DataSpec(name="digits", train_size=200), "train")
    direct = hessian_spectrum(
        model, data, top=2, bottom=1, trace_samples=4, device="cpu",
        dtype=torch.float32, batch_size=256, options=LanczosOptions(),
    )  # fmt: skip
    hessian = client.get(f"/api/surfaces/{surface_id}").json()["hessian"]
    np.testing.assert_allclose(hessian["top_eigenvalues"], direct.top, rtol=1e-6)
    np.testing.assert_allclose(hessian["bottom_eigenvalues"], direct.bottom, rtol=1e-6)
    assert hessian["lambda_max"] == hessian["top_eigenvalues"][0]
    assert hessian["lambda_min"] == hessian["bottom_eigenvalues"][0]
    assert hessian["ratio"] == pytest.approx(abs(direct.ratio), rel=1e-6)
    assert hessian["trace"] == pytest.approx(direct.trace, rel=1e-6)
    assert hessian["trace_samples"] == 4 and hessian["n_samples"] == 200
    assert hessian["n_params"] == direct.n_params and hessian["train_size"] == 200
    cmap = hessian["curvature"]
    assert cmap["x"] == [-1.0, 0.0, 1.0] and cmap["y"] == [-1.0, 0.0, 1.0]
    ratio = np.array(cmap["ratio"], dtype=float)
    assert ratio.shape == (3, 3) and np.isfinite(ratio).all()
    # The map's centre is θ itself: its extreme eigenvalues are the spectrum's.
    assert cmap["lambda_max"][1][1] == pytest.approx(direct.top[0], rel=1e-3)

    # Key numbers in the list and the sub-resource; the file holds the group (docs/format.md).
    (listed,) = client.get("/api/surfaces").json()
    assert listed["hessian"]["lambda_max"] == hessian["lambda_max"]
    assert listed["hessian"]["curvature_map"] is True
    assert client.get(f"/api/surfaces/{surface_id}/hessian").json() == hessian
    path = Path(client.app.state.settings.surfaces_dir) / f"{surface_id}.h5"  # type: ignore[attr-defined]
    with h5py.File(path, "r") as f:
        assert f["hessian"].attrs["encoding-type"] == "hessian-spectrum"
    _check_plane_curvature(hessian, path)

    # Asked again, or for a part of it: the stored numbers at once (200), no new job.
    for body in (ANALYSIS, {"top": 2}, {"top": 0, "bottom": 0, "curvature_grid": 3}):
        again = client.post(f"/api/surfaces/{surface_id}/hessian", json=body)
        assert again.status_code == 200, (body, again.text)
        assert again.json()["hessian"] == hessian and again.json()["job"]["id"] == job["id"]
    assert len(client.get("/api/jobs").json()) == 2  # the surface's and the analysis's

    # Something not stored yet (more eigenvalues) is a new job that replaces the group.
    more = client.post(f"/api/surfaces/{surface_id}/hessian", json={"top": 3, "bottom": 0})
    assert more.status_code == 202
    run_all(client)
    replaced = client.get(f"/api/surfaces/{surface_id}/hessian").json()
    assert len(replaced["top_eigenvalues"]) == 3 and replaced["curvature"] is None
    np.testing.assert_allclose(replaced["top_eigenvalues"][:2], direct.top, rtol=1e-4)

    # The surface's own cache answer still names the surface job, not the analysis.
    cached = client.post("/api/surfaces", json=TINY).json()
    assert cached["job"]["kind"] == "surface"


def _check_plane_curvature(hessian: dict[str, Any], path: Path) -> None:
    """The plotted axes' curvature beside tr(H)/n and the sentence: the library's summary of
    the stored group, sent as it is."""
    group = store.read_group(path, "hessian")
    assert group is not None
    expected = plane_summary(*group)
    plane = hessian["plane_curvature"]
    assert expected is not None and plane["axes"] == ["x", "y"]
    assert plane["hessian"] == pytest.approx(expected["hessian"], rel=1e-12)
    assert plane["finite_difference"] == pytest.approx(expected["finite_difference"])
    assert plane["step"] == pytest.approx([0.5, 0.5]) and plane["metric"] == "train_loss"
    assert plane["mean_curvature"] == pytest.approx(hessian["trace"] / hessian["n_params"])
    assert (plane["lambda_min"], plane["lambda_max"]) == (
        hessian["lambda_min"], hessian["lambda_max"]
    )  # fmt: skip
    assert plane["sentence"] == expected["sentence"] and "along y" in plane["sentence"]


def test_density_and_fixed_step_map_are_stored_served_and_cached(client: TestClient) -> None:
    surface_id = computed_surface(client)
    url = f"/api/surfaces/{surface_id}/hessian"
    assert client.post(url, json={"top": 1, "bottom": 0}).status_code == 202
    run_all(client)
    assert client.get(url).json()["density"] is None
    limits = client.get("/api/config").json()["limits"]  # what the page's form is bounded by
    assert limits["max_density_probes"] == 20 and limits["max_lanczos_steps"] == 100

    # A stored analysis without a density does not answer a request for one.
    body = {"top": 1, "bottom": 0, "density_probes": 2, "density_steps": 10,
            "curvature_grid": 2, "curvature_steps": 3}  # fmt: skip
    reply = client.post(url, json=body)
    assert reply.status_code == 202, reply.text
    assert reply.json()["job"]["progress"] == {"done": 0, "total": 1 + 1 + 2 * 2}
    run_all(client)
    hessian = client.get(url).json()
    density = hessian["density"]
    assert density["probes"] == 2 and density["steps"] == 10 and density["seed"] == 0
    assert len(density["nodes"]) == 2 and len(density["nodes"][0]) == 10
    assert len(density["grid"]) == len(density["density"]) > 0
    assert 0.0 <= density["negative_fraction"] <= 1.0
    assert hessian["curvature"]["steps"] == 3
    assert np.array(hessian["curvature"]["residual_min"], dtype=float).shape == (2, 2)

    # The service adds plumbing, not arithmetic: the library's density on the same data.
    model, _ = load_checkpoint(_checkpoint(client))
    operator = HessianOperator(
        model, load_data(DataSpec(name="digits", train_size=200), "train"), device="cpu"
    )
    direct = spectral_density(operator.matvec, operator.n, n_probes=2, steps=10, seed=0)
    np.testing.assert_allclose(density["nodes"], direct.nodes, rtol=1e-6)
    np.testing.assert_allclose(density["density"], direct.density, rtol=1e-6, atol=1e-12)
    negative = direct.negative_mass
    assert negative is not None
    assert density["negative_fraction"] == pytest.approx(negative.fraction)
    assert density["negative_interval"] == pytest.approx(list(negative.interval))

    # Asked again (or for less): stored; other probes, or the map by ARPACK: a new job.
    for again in (body, {"top": 0, "bottom": 0, "density_probes": 2, "density_steps": 10}):
        assert client.post(url, json=again).status_code == 200, again
    assert client.post(url, json={**body, "density_probes": 3}).status_code == 202
    run_all(client)
    assert client.get(url).json()["density"]["probes"] == 3
    assert client.post(url, json={**body, "curvature_steps": None}).status_code == 202


def test_unknown_incomplete_and_busy_surfaces(client: TestClient) -> None:
    assert client.post("/api/surfaces/" + "ab" * 10 + "/hessian", json={}).status_code == 404
    assert client.get("/api/surfaces/" + "ab" * 10 + "/hessian").status_code == 404
    assert client.post("/api/surfaces/NOT-HEX/hessian", json={}).status_code == 422

    queued = client.post("/api/surfaces", json=TINY).json()["job"]
    waiting = client.post(f"/api/surfaces/{queued['surface_id']}/hessian", json={})
    assert waiting.status_code == 409 and "wait for its job" in waiting.json()["detail"]

    surface_id = computed_surface(client)
    path = Path(client.app.state.settings.surfaces_dir) / f"{surface_id}.h5"  # type: ignore[attr-defined]
    with h5py.File(path, "r+") as f:
        f.attrs["status"] = "partial"
    partial = client.post(f"/api/surfaces/{surface_id}/hessian", json={})
    assert partial.status_code == 409 and "partial" in partial.json()["detail"]
    with h5py.File(path, "r+") as f:
        f.attrs["status"] = "complete"

    # One writer per file: the same analysis is shared, another one waits its turn (409),
    # and the surface cannot be deleted under it.
    first = client.post(f"/api/surfaces/{surface_id}/hessian", json={"top": 1})
    assert first.status_code == 202
    shared = client.post(f"/api/surfaces/{surface_id}/hessian", json={"top": 1})
    assert shared.status_code == 202 and shared.json()["job"]["id"] == first.json()["job"]["id"]
    other = client.post(f"/api/surfaces/{surface_id}/hessian", json={"top": 2})
    assert other.status_code == 409 and first.json()["job"]["id"] in other.json()["detail"]
    assert client.delete(f"/api/surfaces/{surface_id}").status_code == 409
    assert client.get(f"/api/surfaces/{surface_id}/hessian").status_code == 404


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"top": -1}, "greater than or equal to 0"),
        ({"curvature_grid": 16}, "less than or equal to 15"),
        ({"top": 0, "bottom": 0}, "nothing to compute"),
        ({"colour": "red"}, "Extra inputs are not permitted"),
        ({"trace_samples": 0}, "greater than or equal to 1"),
        ({"train_size": 0}, "greater than or equal to 1"),
        ({"top": 11}, "limit of 10 eigenvalues"),
        ({"trace": True, "trace_samples": 201}, "limit of 200"),
        ({"curvature_grid": 4}, "limit of 3 points per axis"),
        ({"density_probes": 101}, "less than or equal to 100"),
        ({"density_probes": 1, "density_steps": 1}, "greater than or equal to 2"),
        ({"curvature_steps": 5}, "ask for 'curvature_grid'"),
        ({"density_probes": 21}, "limit of 20"),
        ({"density_probes": 1, "density_steps": 101}, "limit of 100 Lanczos steps"),
        ({"curvature_grid": 2, "curvature_steps": 150}, "limit of 100 Lanczos steps"),
    ],
)
def test_bad_analysis_requests_are_422(tmp_path: Path, body: dict[str, Any], words: str) -> None:
    settings = tiny_settings(tmp_path / "data", max_curvature_grid=3)
    with TestClient(create_app(settings)) as client:
        surface_id = client.post("/api/surfaces", json=TINY).json()["job"]["surface_id"]
        # Validation comes before the surface's state is looked at: a queued surface is fine.
        reply = client.post(f"/api/surfaces/{surface_id}/hessian", json=body)
    assert reply.status_code == 422, reply.text
    assert words in str(reply.json()["detail"]), reply.json()


def test_cancel_queued_and_running_analyses(client: TestClient) -> None:
    surface_id = computed_surface(client)
    url = f"/api/surfaces/{surface_id}/hessian"
    queued = client.post(url, json=ANALYSIS).json()["job"]
    assert client.delete(f"/api/jobs/{queued['id']}").json()["status"] == "cancelled"

    # The real runner, stopped after 2 of its 10 steps: the cancel flag reaches it through
    # the worker's heartbeat, and the runner checks it between curvature points.
    running = client.post(url, json=ANALYSIS).json()["job"]
    assert running["id"] != queued["id"]
    queue = client.app.state.queue  # type: ignore[attr-defined]

    def cancelling_runner(request: dict[str, Any], ctx: JobContext) -> None:
        def report(**values: Any) -> None:
            ctx.report(**values)
            if values.get("done") == 2:
                queue.cancel(ctx.job_id)
                deadline = time.monotonic() + 10
                while not ctx.should_stop():  # the heartbeat has seen the flag
                    assert time.monotonic() < deadline, "cancel never reached the runner"
                    time.sleep(0.01)

        hessian_runner.run(request, dataclasses.replace(ctx, report=report))

    state = client.app.state  # type: ignore[attr-defined]
    runners = {**RUNNERS, JobKind.HESSIAN: cancelling_runner}
    worker = Worker(state.queue, state.settings, state.sessions, runners=runners)
    assert worker.run_once()
    job = client.get(f"/api/jobs/{running['id']}").json()
    assert job["status"] == "cancelled" and job["progress"] == {"done": 2, "total": 10}
    assert client.get(f"/api/surfaces/{surface_id}").json()["hessian"] is None  # nothing stored
    assert client.post(url, json=ANALYSIS).status_code == 202  # and it can be asked again


def test_old_database_gains_the_kind_column(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    with engine.begin() as connection:  # what a database made before analyses has
        connection.exec_driver_sql("ALTER TABLE jobs DROP COLUMN kind")
        connection.exec_driver_sql(
            "INSERT INTO jobs (id, status, stage, surface_id, label, request, done, total, "
            f"cancel_requested, attempts, created_at, updated_at) VALUES ('{'d' * 32}', 'done', "
            f"'finished', '{'d' * 20}', '', '{{}}', 1, 1, 0, 1, 0, 0)"
        )
    engine.dispose()
    settings = tiny_settings(tmp_path / "data", database_url=url)
    with TestClient(create_app(settings)) as client:
        job = client.get("/api/jobs/" + "d" * 32).json()
    assert job["kind"] == "surface" and job["status"] == "done"


def test_every_lanczos_result_says_whether_it_converged(client: TestClient) -> None:
    """The spectrum (ARPACK) converges; a 2-step map does not, and the JSON says which."""
    surface_id = computed_surface(client)
    url = f"/api/surfaces/{surface_id}/hessian"
    body = {"top": 1, "bottom": 1, "curvature_grid": 2, "curvature_steps": 2}
    assert client.post(url, json=body).status_code == 202
    run_all(client)
    hessian = client.get(url).json()
    spectrum = hessian["convergence"]
    assert spectrum["converged"] is True
    assert spectrum["residual"] <= spectrum["tolerance"]
    assert len(spectrum["top_residuals"]) == 1 and len(spectrum["bottom_residuals"]) == 1
    cmap = hessian["curvature"]
    assert cmap["not_converged"] == 4 and cmap["tol"] > 0
    assert np.array(cmap["converged"]).shape == (2, 2) and not np.array(cmap["converged"]).any()
    assert hessian["converged"] is False  # the map's points did not
    assert client.get(f"/api/surfaces/{surface_id}").json()["hessian"]["converged"] is False
