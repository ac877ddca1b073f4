"""PCA directions are priced by what they hold: every snapshot of the trajectory, all at
once in memory (``pca_directions`` stacks them for one SVD), so a long training's PCA is
refused by the memory budget before it is queued, not killed by the kernel after training."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.api.test_api import TINY
from tests.api.test_budget_refusals import default_settings

# He et al. 2016 §4.2's ResNet-110 recipe, with PCA directions: a snapshot every epoch, all
# 301 of them in memory at once for the PCA (1.7 M parameters each), on a small subset so
# that the training alone is well within the budgets.
RESNET110_PCA: dict[str, Any] = {
    "model": "resnet110",
    "dataset": "cifar10",
    "train": {"epochs": 300},
    "train_size": 100,
    "grid": {"nx": 3, "ny": 3},
    "directions": {"kind": "pca"},
}


@pytest.fixture
def default_budgets(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(default_settings(tmp_path / "data"))) as test_client:
        yield test_client


def test_pca_of_a_long_trajectory_is_refused_by_the_memory_budget(
    default_budgets: TestClient,
) -> None:
    reply = default_budgets.post("/api/surfaces", json=RESNET110_PCA)
    assert reply.status_code == 422, reply.text
    assert "LANDSCAPE_MAX_JOB_MEMORY_BYTES" in reply.json()["detail"]
    random = {**RESNET110_PCA, "directions": {"kind": "random"}}  # the same job otherwise
    assert default_budgets.post("/api/surfaces", json=random).status_code == 202


def test_a_small_pca_job_is_still_accepted(default_budgets: TestClient) -> None:
    small = {**TINY, "directions": {"kind": "pca"}, "train": {"epochs": 4}}
    reply = default_budgets.post("/api/surfaces", json=small)
    assert reply.status_code == 202, reply.text
