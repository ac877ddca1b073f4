"""The Ray backend on a real local Ray cluster: same numbers as local, lost tasks retried."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from landscape import storage as store
from landscape.data import load_data
from landscape.directions import make_directions
from landscape.models import build
from landscape.sources.checkpoint import save_checkpoint
from landscape.specs import DataSpec, DirectionSpec, EngineOptions, GridSpec, SurfaceSpec
from landscape.surface import compute_surface

ray = pytest.importorskip("ray", reason="Ray is a dev dependency; install landscape[dev]")

pytestmark = pytest.mark.slow
MODEL_ARGS = {"in_channels": 1, "num_classes": 10, "image_size": 8}


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local two-CPU Ray instance started by the test, as a user's laptop would have."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _spec(checkpoint: Path) -> SurfaceSpec:
    return SurfaceSpec(
        checkpoint=str(checkpoint),
        data=DataSpec(train_size=96, test_size=32),
        grid=GridSpec(x_range=(-1.0, 1.0), n_x=5, y_range=(-0.5, 0.5), n_y=4),
        splits=("train", "test"),
    )


def test_ray_surface_equals_local_surface(ray_cluster: None, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build("resnet20-noshort", **MODEL_ARGS)  # BN net: exercises folding in the workers
    checkpoint = save_checkpoint(
        tmp_path / "r20.pt",
        model,
        model_name="resnet20-noshort",
        model_args=MODEL_ARGS,
        metadata={},
    )
    spec = _spec(checkpoint)
    local = compute_surface(
        spec, tmp_path / "local.h5", options=EngineOptions(workers=1, compile=False)
    )
    remote = compute_surface(
        spec, tmp_path / "ray.h5", options=EngineOptions(backend="ray", compile=False)
    )
    local_surface, ray_surface = store.read_surface(local), store.read_surface(remote)
    assert ray_surface.status == "complete"
    assert ray_surface.attrs["engine"]["backend"] == "ray"
    for name in spec.metric_names:
        assert not np.isnan(ray_surface.values[name]).any()
        np.testing.assert_allclose(ray_surface.values[name], local_surface.values[name], rtol=1e-6)


class CrashOnce(nn.Module):
    """A tiny net whose first forward in any process kills that process (a lost worker)."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.fc = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        if not os.path.exists(self.marker):
            Path(self.marker).touch()
            os._exit(1)
        return self.fc(x.flatten(1))


def test_a_lost_ray_task_is_retried(ray_cluster: None, tmp_path: Path) -> None:
    from landscape.engine.ray_backend import RayEvaluator

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    torch.manual_seed(0)
    model = CrashOnce(str(tmp_path / "crashed"))
    x, y = load_data(DataSpec(train_size=32), "train")
    directions, _ = make_directions(model, DirectionSpec(), 2)
    chunks = [np.array([[0.0, 0.0], [0.5, -0.5]]), np.array([[1.0, 1.0]])]
    with RayEvaluator(
        model, directions, {"train": (x, y)}, options=EngineOptions(backend="ray", compile=False)
    ) as evaluator:
        results = dict(evaluator.imap(chunks))
    assert (tmp_path / "crashed").exists(), "the fault was never injected"
    assert sorted(results) == [0, 1]
    assert results[0]["train_loss"].shape == (2,)
    assert np.isfinite(results[1]["train_loss"]).all()
