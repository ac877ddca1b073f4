"""λmax along training (landscape.analysis.sharpness) against a dense Hessian, warm vs cold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from landscape.analysis.sharpness import (
    SharpnessOptions,
    SharpnessTracker,
    step_size,
    trajectory_sharpness,
)
from landscape.sources.checkpoint import save_checkpoint
from landscape.specs import DataSpec, TrainSpec, to_dict


def _data() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(40, 6, generator=g), torch.randint(0, 3, (40,), generator=g)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))  # 53 parameters


def _dense_lambda_max(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """An independent reference: the full Hessian by autograd.functional, float64."""
    model = model.double()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(theta: Tensor) -> Tensor:
        params, offset = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            size = int(np.prod(shape))
            params[name] = theta[offset : offset + size].reshape(shape)
            offset += size
        return F.cross_entropy(functional_call(model, params, (x.double(),)), y)

    hessian = torch.autograd.functional.hessian(loss, flat)
    return float(torch.linalg.eigvalsh(hessian)[-1])


def test_lambda_max_matches_dense_hessian_along_gd() -> None:
    """At several snapshots of a full-batch GD run λmax equals the dense Hessian's."""
    x, y = _data()
    model = _net()
    tracker = SharpnessTracker((x, y), device="cpu", options=SharpnessOptions(tol=1e-8))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    seen = []
    for step in range(31):
        if step % 10 == 0:
            measured = tracker.measure(model).lambda_max
            reference = _dense_lambda_max(_copy(model), x, y)
            assert measured == pytest.approx(reference, rel=1e-4)
            seen.append(reference)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert len(set(np.round(seen, 3))) == len(seen), "snapshots should differ in sharpness"


def _copy(model: nn.Module) -> nn.Module:
    clone = _net()
    clone.load_state_dict(model.state_dict())
    return clone


def test_warm_start_gives_cold_start_values() -> None:
    x, y = _data()
    model = _net()
    options = SharpnessOptions(krylov=8, tol=1e-8)
    warm = SharpnessTracker((x, y), device="cpu", options=options)
    cold = SharpnessTracker((x, y), device="cpu", options=options, warm_start=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    warm_products = cold_products = 0
    for _ in range(4):
        a, b = warm.measure(model), cold.measure(model)
        assert a.lambda_max == pytest.approx(b.lambda_max, rel=1e-6)
        warm_products += a.matvecs
        cold_products += b.matvecs
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    assert warm_products <= cold_products


def test_trajectory_sharpness_orders_snapshots_and_reads_eta(tmp_path: Path) -> None:
    """Snapshots given out of order come back by step, with η of a constant-step gd run."""
    spec = TrainSpec(model="mlp-plain", optimizer="gd", lr=0.1, schedule="constant",
                     data=DataSpec(train_size=64))  # fmt: skip
    args = {"depth": 1, "width": 4, "in_channels": 1, "num_classes": 10, "image_size": 8}
    from landscape.models import build

    paths = []
    for epoch in (2, 0, 1):
        torch.manual_seed(epoch)
        model = build("mlp-plain", **args)
        path = tmp_path / f"epoch_{epoch:03d}.pt"
        meta = {"epoch": epoch, "model": "mlp-plain", "train_spec": to_dict(spec)}
        save_checkpoint(path, model, model_name="mlp-plain", model_args=args, metadata=meta)
        paths.append(path)
    progress: list[tuple[int, int]] = []
    records = trajectory_sharpness(
        paths, device="cpu", on_progress=lambda d, t: progress.append((d, t))
    )
    assert [r["step"] for r in records] == [0, 1, 2]
    assert all(r["lr"] == 0.1 and r["lambda_max"] > 0 for r in records)
    assert progress[-1] == (3, 3)
    assert step_size({"train_spec": {**to_dict(spec), "schedule": "cosine"}}) is None
