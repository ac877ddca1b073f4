"""A job over a budget is refused with what an operator or user needs to act: the budget's
variable and value, the job's estimate, how long it would run on this deployment, and what
fits instead — for a surface the largest grid, found with the cost model and checked here by
planning it (accepted) and one point more per axis (refused)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.planning.surface import plan_surface
from api.schedule import KIND_PRIORS, PRIOR_FLOPS_PER_SECOND
from api.schemas.surface import SurfaceRequest
from api.settings import Settings
from tests.api.test_api import TINY, tiny_settings

# The paper's headline job: a 51×51 ResNet-56 CIFAR-10 surface (Li et al. 2018, Fig. 5) of a
# net trained as He et al. 2016 §4.2 (300 epochs: the server's epoch cap).
PAPER_SURFACE: dict[str, Any] = {
    "model": "resnet56",
    "dataset": "cifar10",
    "train": {"epochs": 300},
    "grid": {"nx": 51, "ny": 51, "xrange": [-1, 1], "yrange": [-1, 1]},
    "directions": {"normalization": "filter", "ignore": "biasbn", "seed": 0},
    "estimate": None,  # exact: the full pass per point these prices are of
}
# A surface's assumed rate on a CPU and its overhead, documented in docs/deploy.md ("The queue")
SURFACE = KIND_PRIORS["surface"]
CPU_RATE = PRIOR_FLOPS_PER_SECOND["cpu"] * SURFACE.speed


def default_settings(data_dir: Path, **changes: Any) -> Settings:
    """``Settings()`` with its budgets as they are: only where it runs is pinned (a CPU
    deployment, no workers, CIFAR-10 planned without its files)."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "workers": 0,
        "device": "cpu",
        "compute_device": "cpu",
        "allow_download": True,
    }
    return Settings(**(values | changes))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(default_settings(tmp_path / "data"))) as test_client:
        yield test_client


def _with_grid(request: dict[str, Any], *axes: int, **changes: Any) -> dict[str, Any]:
    grid = dict(zip(("nx", "ny", "nz"), axes, strict=False))
    full = {**request["grid"], "ny": None, **grid}
    if len(axes) == 1:
        full["yrange"] = None
    if len(axes) == 3:
        full["zrange"] = [-1, 1]
    return {**request, "grid": full, **changes}


def _refusal(client: TestClient, request: dict[str, Any]) -> str:
    reply = client.post("/api/surfaces", json=request)
    assert reply.status_code == 422, reply.text
    return str(reply.json()["detail"])


def _accepted(client: TestClient, request: dict[str, Any]) -> None:
    reply = client.post("/api/surfaces", json=request)
    assert reply.status_code == 202, reply.text


def _number(pattern: str, text: str) -> float:
    found = re.search(pattern, text)
    assert found, (pattern, text)
    return float(found.group(1))


def test_the_papers_job_is_refused_with_its_time_and_what_fits(client: TestClient) -> None:
    detail = _refusal(client, PAPER_SURFACE)
    assert "LANDSCAPE_MAX_JOB_FLOPS = 5e+14" in detail
    flops = _number(r"an estimated ([\d.e+]+) FLOPs", detail)
    assert 4e16 < flops < 5e16  # 2601 points and 300 epochs, 50,000 images, 0.25 GFLOP each
    days = _number(r"about (\d+) days on this deployment", detail)
    assert days == pytest.approx((SURFACE.overhead_s + flops / CPU_RATE) / 86400, abs=1)
    assert f"assumed rate {CPU_RATE:.3g} FLOP/s" in detail and "CPU worker" in detail
    assert "per surface job" in detail
    # Its training alone is over: the epochs that fit, then the grid once it is trained.
    assert "no grid fits it while the net is still to be trained" in detail
    epochs = int(_number(r"at most (\d+) epochs fit with the smallest grid, 2×2 ", detail))
    side = int(_number(r"once the net is trained the largest grid that fits is (\d+)×\1 ", detail))
    _accepted(client, _with_grid(PAPER_SURFACE, 2, 2, train={"epochs": epochs}))
    _refusal(client, _with_grid(PAPER_SURFACE, 2, 2, train={"epochs": epochs + 1}))
    _trained(client, PAPER_SURFACE)
    again = _refusal(client, PAPER_SURFACE)
    assert f"the largest grid that fits it is {side}×{side} " in again
    _accepted(client, _with_grid(PAPER_SURFACE, side, side))
    _refusal(client, _with_grid(PAPER_SURFACE, side + 1, side + 1))


def test_a_net_trained_within_the_budget_is_told_the_largest_grid_with_its_training(
    client: TestClient,
) -> None:
    short = {**PAPER_SURFACE, "train": {"epochs": 10}}  # 3.8e14 FLOPs of training
    detail = _refusal(client, short)
    side = int(_number(r"the largest grid that fits it is (\d+)×\1 ", detail))
    _accepted(client, _with_grid(short, side, side))
    _refusal(client, _with_grid(short, side + 1, side + 1))


def _trained(client: TestClient, request: dict[str, Any]) -> None:
    """Make the checkpoint of ``request``'s recipe as if it had been trained here (planning
    reads only whether it exists)."""
    state = client.app.state  # type: ignore[attr-defined]
    unbounded = state.settings.model_copy(update={"max_job_flops": 1e30})
    with state.sessions() as session:
        plan = plan_surface(SurfaceRequest.model_validate(request), unbounded, session)
    plan.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
    plan.checkpoint_path.touch()


@pytest.fixture
def tiny_budget(tmp_path: Path) -> Iterator[TestClient]:
    """A budget of the fixed part (training) plus exactly 30 grid points of the tiny net,
    from the server's own estimates of two grids."""
    with TestClient(create_app(tiny_settings(tmp_path / "probe"))) as probe:
        small, large = (
            probe.post("/api/jobs/estimate", json={"surfaces": [_with_grid(TINY, n, n)]}).json()
            for n in (5, 6)
        )
    flops_25, flops_36 = (reply["jobs"][0]["estimate"]["flops"] for reply in (small, large))
    per_point = (flops_36 - flops_25) / 11
    budget = flops_25 + 5.25 * per_point
    with TestClient(create_app(tiny_settings(tmp_path / "data", max_job_flops=budget))) as client:
        yield client


def test_three_dimensional_and_unequal_grids_get_their_largest_equivalents(
    tiny_budget: TestClient,
) -> None:
    client = tiny_budget
    square = _refusal(client, _with_grid(TINY, 9, 9))
    assert "the largest grid that fits it is 5×5 (25 points)" in square  # 25 ≤ 30 < 36
    _accepted(client, _with_grid(TINY, 5, 5))
    _refusal(client, _with_grid(TINY, 6, 6))
    cube = _refusal(client, _with_grid(TINY, 4, 4, 4))
    assert "the largest grid that fits it is 3×3×3 (27 points)" in cube  # 27 ≤ 30 < 64
    _accepted(client, _with_grid(TINY, 3, 3, 3))
    unequal = _refusal(client, _with_grid(TINY, 24, 6))
    found = re.search(r"5×5 \(25 points\); in the request's proportions (\d+)×(\d+) ", unequal)
    assert found, unequal
    wide, narrow = (int(n) for n in found.groups())
    assert wide * narrow <= 30 and wide > narrow  # 12×3 = 36 would not fit
    _accepted(client, _with_grid(TINY, wide, narrow))
    curve = _refusal(client, _with_grid(TINY, 40))
    assert "the largest grid that fits it is 30 points" in curve
    _accepted(client, _with_grid(TINY, 30))
    _refusal(client, _with_grid(TINY, 31))
