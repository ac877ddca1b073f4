"""Exploration mode over REST: estimated surfaces (their own ids, SE, n and exact flags per
point), the default mode by data size, make exact as a job, prices and stage progress."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.planning import surface as surface_planning
from api.planning.surface import Plan, choose_estimate
from api.schemas.surface import SurfaceRequest
from api.settings import Settings
from landscape.specs import DataSpec
from tests.api.test_api import TINY, run_all, tiny_settings, worker_for

# The whole digits training split (1,437): stages 256, 512, 1024 and N, so points can stop early.
# A ±0.5 plane keeps the losses near the trained net's, where float32 sums agree to 1e-6.
DIGITS = {
    **{k: v for k, v in TINY.items() if k != "train_size"},
    "grid": {"nx": 5, "ny": 5, "xrange": [-0.5, 0.5], "yrange": [-0.5, 0.5]},
}
EXPLORE = {**DIGITS, "estimate": {"target": 0.05, "kind": "relative"}}
EXACT = {**DIGITS, "estimate": None}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return tiny_settings(tmp_path / "data")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _events(client: TestClient, job_id: str) -> list[dict[str, Any]]:
    """Run the job on a worker thread while following its event stream; every event's data."""
    thread = threading.Thread(target=worker_for(client).run_once)
    events = []
    with client.stream("GET", f"/api/jobs/{job_id}/events") as stream:
        thread.start()
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    thread.join()
    return events


def _values(client: TestClient, surface_id: str) -> dict[str, np.ndarray]:
    data = client.get(f"/api/surfaces/{surface_id}").json()
    return {m: np.array(v, dtype=float) for m, v in data["values"].items()}


def test_estimate_then_make_exact_equals_a_fresh_exact_surface(client: TestClient) -> None:
    created = client.post("/api/surfaces", json=EXPLORE)
    assert created.status_code == 202, created.text
    body = created.json()
    assert body["mode"] == "explore" and "as asked" in body["mode_reason"]
    estimate_id, job_id = body["job"]["surface_id"], body["job"]["id"]

    events = _events(client, job_id)
    assert events[-1]["status"] == "done", events[-1]["error"]
    details = [e["stage_detail"] for e in events if e["stage"] == "estimating"]
    stages = [re.fullmatch(r"estimate stage (\d+) of (\d+)", d) for d in details]
    assert details and all(stages), details
    ks, totals = [int(m[1]) for m in stages if m], {int(m[2]) for m in stages if m}
    assert ks[0] == 1 and ks == sorted(ks) and len(totals) == 1 and max(ks) <= totals.pop()

    data = client.get(f"/api/surfaces/{estimate_id}").json()
    estimate = data["estimate"]
    assert data["status"] == "complete" and estimate["describe"] == "±5 %"
    assert estimate["method"] == "fitted" and "control variate" in estimate["method_text"]
    assert "target" in estimate["stopping_rule"]
    split = estimate["splits"]["train"]
    assert split["N"] == 1437 and split["z"] >= 1.959  # at least the 95 % quantile
    n = np.array(estimate["n"]["train"])
    assert n.shape == (5, 5) and (n >= 2).all() and (n <= 1437).all()
    assert not np.array(estimate["exact_points"]).all()  # something is left to make exact
    assert estimate["exact"] is False and estimate["points"] == 25
    se = np.array(estimate["se"]["train_loss"], dtype=float)
    assert se.shape == (5, 5) and (se[n == 1437] < 1e-9).all()
    off_centre = np.ones((5, 5), dtype=bool)
    off_centre[2, 2] = False  # the centre differs from itself by nothing: its SE is 0
    assert (se[(n < 1437) & off_centre] > 0).all() and se[2, 2] == 0
    assert set(estimate["se"]) == set(data["values"])
    assert np.array(estimate["at_target"]).all()  # a complete estimate: every point at target
    # listed summaries say it rests on an estimate too
    listed = {s["id"]: s for s in client.get("/api/surfaces").json()}
    assert listed[estimate_id]["estimate"]["points_exact"] == estimate["points_exact"]

    exact = client.post("/api/surfaces", json=EXACT)
    assert exact.status_code == 202 and exact.json()["mode"] == "exact"
    exact_id = exact.json()["job"]["surface_id"]
    assert exact_id != estimate_id  # an estimate never shares the exact surface's id
    run_all(client)
    assert client.get(f"/api/surfaces/{exact_id}").json()["estimate"] is None

    made = client.post(f"/api/surfaces/{estimate_id}/exact")
    assert made.status_code == 202, made.text
    assert made.json()["mode"] == "exact" and made.json()["job"]["surface_id"] == estimate_id
    events = _events(client, made.json()["job"]["id"])
    assert events[-1]["status"] == "done", events[-1]["error"]
    assert "exact" in {e["stage"] for e in events}

    after = client.get(f"/api/surfaces/{estimate_id}").json()
    assert after["estimate"]["exact"] is True and np.array(after["estimate"]["exact_points"]).all()
    assert (np.array(after["estimate"]["n"]["train"]) == 1437).all()
    made_values, fresh = _values(client, estimate_id), _values(client, exact_id)
    for metric in fresh:
        np.testing.assert_allclose(made_values[metric], fresh[metric], rtol=1e-6, atol=1e-6)

    again = client.post(f"/api/surfaces/{estimate_id}/exact")
    assert again.status_code == 200 and again.json()["surface"]["id"] == estimate_id
    assert "already exact" in again.json()["mode_reason"]
    assert client.post(f"/api/surfaces/{exact_id}/exact").status_code == 200


def test_prices_an_estimate_at_its_expected_cost_and_make_exact_at_missing_samples(
    client: TestClient,
) -> None:
    first = client.post("/api/surfaces", json=EXPLORE).json()
    run_all(client)  # trains the checkpoint: later prices are evaluation alone
    estimate_id = first["job"]["surface_id"]
    queue = client.app.state.queue  # type: ignore[attr-defined]
    exact_job = client.post("/api/surfaces", json=EXACT).json()["job"]
    made_job = client.post(f"/api/surfaces/{estimate_id}/exact").json()["job"]
    exact_flops = queue.public(queue.get(exact_job["id"])).estimate.flops
    made_flops = queue.public(queue.get(made_job["id"])).estimate.flops

    n = np.array(client.get(f"/api/surfaces/{estimate_id}").json()["estimate"]["n"]["train"])
    missing = float((1437 - n).sum())
    assert made_flops == pytest.approx(exact_flops * missing / (25 * 1437), rel=1e-9)
    # an estimate at ±5 %: the centre's pass plus the samples a point is expected to need,
    # rounded up to the look ladder, never fewer than the first stage nor more than N
    plan = Plan.from_json(queue.get(first["job"]["id"]).plan)
    assert plan.estimate is not None and plan.estimate.target == 0.05
    from api.planning.cost import EXPLORE_SAMPLES_AT_5_PERCENT, explore_samples
    from landscape.explore.permutation import ladder

    sizes = ladder(50_000, plan.estimate.first_stage)
    expected = int(sizes[np.searchsorted(sizes, EXPLORE_SAMPLES_AT_5_PERCENT)])
    assert explore_samples(plan.estimate, 50_000) == expected < 50_000
    assert expected < EXPLORE_SAMPLES_AT_5_PERCENT * 2**0.25 + 1  # one ladder step at most
    assert explore_samples(plan.estimate, 300) == 300  # never more than N
    small = dataclasses.replace(plan.estimate, target=0.5)  # 10 samples: the first stage
    assert explore_samples(small, 50_000) == plan.estimate.first_stage


def test_make_exact_bad_cases_answer_json(client: TestClient) -> None:
    missing = client.post("/api/surfaces/" + "0" * 20 + "/exact")
    assert missing.status_code == 404 and "no surface" in missing.json()["detail"]
    assert client.post("/api/surfaces/not-hex!/exact").status_code == 422

    estimate_id = client.post("/api/surfaces", json=EXPLORE).json()["job"]["surface_id"]
    early = client.post(f"/api/surfaces/{estimate_id}/exact")  # queued, no file yet
    assert early.status_code == 404 and "no points yet" in early.json()["detail"]
    run_all(client)
    queue = client.app.state.queue  # type: ignore[attr-defined]
    latest = queue.latest_for(estimate_id, "surface")
    queue.submit(Plan.from_json(latest.plan), latest.request)  # its estimate job runs again
    busy = client.post(f"/api/surfaces/{estimate_id}/exact")
    assert busy.status_code == 409 and "still being estimated" in busy.json()["detail"]


@pytest.mark.parametrize(
    ("estimate", "words"),
    [
        ({"target": 0}, "greater than 0"),
        ({"target": -0.1}, "greater than 0"),
        ({"target": 1.5}, "between 0 % and 100 %"),
        ({"target": 0.05, "kind": "percent"}, "relative"),
        ({"target": "5%"}, "valid number"),
        ({"target": 0.05, "tolerance": 1}, "Extra inputs"),
        ({"target": 0.05, "method": "magic"}, "fitted"),
        ("5%", "valid dictionary"),
    ],
)
def test_bad_estimates_are_422_with_a_message(
    client: TestClient, estimate: Any, words: str
) -> None:
    response = client.post("/api/surfaces", json={**DIGITS, "estimate": estimate})
    assert response.status_code == 422, response.text
    assert words in json.dumps(response.json()["detail"])


def test_default_mode_follows_the_training_split_size(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = client.post("/api/surfaces", json=DIGITS).json()
    assert small["mode"] == "exact" and "1,437 training samples" in small["mode_reason"]
    exact_id = client.post("/api/surfaces", json=EXACT).json()["job"]["surface_id"]
    assert small["job"]["surface_id"] == exact_id

    monkeypatch.setattr(surface_planning, "EXPLORE_ABOVE", 1000)
    large = client.post("/api/surfaces", json=DIGITS).json()
    assert large["mode"] == "explore" and "by default" in large["mode_reason"]
    explicit = client.post("/api/surfaces", json=EXPLORE).json()
    assert large["job"]["surface_id"] == explicit["job"]["surface_id"] != exact_id
    # asked for exact, a large split stays exact
    assert client.post("/api/surfaces", json=EXACT).json()["mode"] == "exact"


def test_mnist1d_defaults_to_explore_and_its_small_variant_to_exact() -> None:
    """By the registered sizes alone: nothing is generated."""
    request = SurfaceRequest.model_validate({"model": "mlp-plain", "dataset": "mnist1d"})
    spec, reason = choose_estimate(request, DataSpec(name="mnist1d"))
    assert spec is not None and spec.target == 0.05 and spec.relative
    assert "50,000 training samples" in reason
    small, reason = choose_estimate(request, DataSpec(name="mnist1d-small"))
    assert small is None and "4,000" in reason
    subset, _ = choose_estimate(request, DataSpec(name="mnist1d", train_size=5000))
    assert subset is None


def test_datasets_say_their_default_mode(client: TestClient) -> None:
    datasets = {d["name"]: d for d in client.get("/api/datasets").json()}
    assert datasets["digits"]["default_mode"] == "exact"
    assert "1,437 training samples" in datasets["digits"]["default_mode_reason"]
    assert datasets["mnist1d"]["default_mode"] == "explore"
    assert "50,000" in datasets["mnist1d"]["default_mode_reason"]
