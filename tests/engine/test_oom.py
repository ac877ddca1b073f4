"""Out of GPU memory while nothing has fit yet — the K trial, the compile check, the first
group of points — halves K or the batch and tries again, down to 1, before failing; the values
are those of the naive loop, and the retries are in the provenance. The error is injected into
the forward pass, so this runs on the CPU."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import landscape.engine.forward as forward
from landscape.engine import plan
from landscape.engine.evaluator import GridEvaluator, reference_evaluate
from landscape.engine.point_evaluator import CoreConfig, PointEvaluator, split_batches
from landscape.losses import resolve_loss
from landscape.specs import EngineOptions
from tests.engine.test_engine import ConvBNNet, assert_same, setup


class OutOfMemory:
    """Replaces ``forward.logits_at``: raises ``torch.cuda.OutOfMemoryError`` on the first
    ``times`` calls that ``when`` accepts, runs the real forward otherwise."""

    def __init__(self, times: int, when: Any = None) -> None:
        self.left = times
        self.when = when or (lambda params, x: True)
        self.real = forward.logits_at
        self.batch_sizes: list[int] = []

    def __call__(self, module: nn.Module, params: dict[str, Tensor], x: Tensor) -> Tensor:
        if self.left and self.when(params, x):
            self.left -= 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected by the test)")
        self.batch_sizes.append(int(x.shape[0]))
        return self.real(module, params, x)


def _batched(params: dict[str, Tensor], x: Tensor) -> bool:
    """Inside ``torch.vmap``: several grid points per call."""
    return any(torch._C._functorch.is_batchedtensor(p) for p in params.values())


def _evaluate(
    monkeypatch: pytest.MonkeyPatch, oom: OutOfMemory, options: EngineOptions
) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, np.ndarray], int]:
    model, dirs, data = setup(ConvBNNet)
    coords = np.random.default_rng(0).uniform(-1, 1, size=(5, 2))
    monkeypatch.setattr(forward, "logits_at", oom)
    with GridEvaluator(model, dirs, data, options=options) as ev:
        got = ev.evaluate(coords)
        info = ev.describe()
    monkeypatch.undo()
    return got, info, reference_evaluate(model, dirs, coords, data), len(data["test"][0])


def test_first_batch_out_of_memory_halves_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    oom = OutOfMemory(times=2)
    options = EngineOptions(workers=1, compile=False, batch_size=32)
    got, info, ref, n = _evaluate(monkeypatch, oom, options)
    assert info["oom_retries"] == 2 and info["batch_size"] == 8  # 32 → 16 → 8
    assert max(oom.batch_sizes) == 8
    assert_same(got, ref, n)


def test_first_group_out_of_memory_halves_k_first(monkeypatch: pytest.MonkeyPatch) -> None:
    oom = OutOfMemory(times=1, when=_batched)
    options = EngineOptions(workers=1, compile=False, points_per_call=4, batch_size=32)
    got, info, ref, n = _evaluate(monkeypatch, oom, options)
    assert info["oom_retries"] == 1 and info["points_per_call"] == 2 and info["batch_size"] == 32
    assert_same(got, ref, n)


def test_out_of_memory_after_a_group_fit_or_at_one_sample_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, dirs, data = setup(ConvBNNet, n=6)
    with GridEvaluator(model, dirs, data, options=EngineOptions(workers=1, compile=False)) as ev:
        ev.evaluate(np.zeros((1, 2)))
        monkeypatch.setattr(forward, "logits_at", OutOfMemory(times=1))
        with pytest.raises(torch.cuda.OutOfMemoryError):  # memory sufficed before: not ours
            ev.evaluate(np.zeros((1, 2)))
        assert ev.describe()["oom_retries"] == 0
    oom = OutOfMemory(times=100)
    monkeypatch.setattr(forward, "logits_at", oom)
    with (
        pytest.raises(torch.cuda.OutOfMemoryError),
        GridEvaluator(model, dirs, data, options=EngineOptions(workers=1, compile=False)) as ev,
    ):
        ev.evaluate(np.zeros((1, 2)))
    assert oom.left == 100 - 4  # batch 6 → 3 → 2 → 1, then the error is the caller's


def test_k_trial_out_of_memory_ends_the_trial_or_halves_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """K = 2 does not fit: K = 4 and 8 are not tried, K = 1 is kept; one point not fitting at
    first halves the batch and the trial goes on."""
    model, dirs, data = setup(ConvBNNet)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    batches = {s: split_batches(x, y, 96, torch.device("cpu"), True) for s, (x, y) in data.items()}
    config = CoreConfig(
        resolve_loss("cross_entropy"), "cpu", 96, 0, False, True, max_points_per_call=8
    )
    first = OutOfMemory(times=1)  # the first call: one point per call, the whole split
    batched = OutOfMemory(times=10**6, when=_batched)

    def logits_at(module: nn.Module, params: dict[str, Tensor], x: Tensor) -> Tensor:
        return first(module, params, x) if first.left else batched(module, params, x)

    monkeypatch.setattr(forward, "logits_at", logits_at)
    monkeypatch.setattr(plan, "K_TRIAL_MAX_S", float("inf"))  # a busy CPU is not a full GPU
    core = PointEvaluator(model, params, dirs, batches, config)
    tried = 10**6 - batched.left
    monkeypatch.undo()
    info = core.describe()
    assert info["points_per_call"] == 1 and "K=2: out of memory" in info["k_reason"]
    assert "K=4" not in info["k_reason"] and tried == 1
    assert info["oom_retries"] == 2 and info["batch_size"] == 48
    coords = np.random.default_rng(3).uniform(-1, 1, size=(4, 2))
    assert_same(core.evaluate(coords), reference_evaluate(model, dirs, coords, data), 32)
