"""Out of GPU memory at any point — the K trial, the compile check, any group of points —
halves K or the batch and tries again, down to 1, before failing with a clear error; the
values are those of the naive loop, and the retries are in the provenance. The error is
injected into the forward pass, so this runs on the CPU; so is the memory each process sizes
its batches from (its share of the device)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import landscape.engine.forward as forward
import landscape.engine.point_evaluator as point_evaluator
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


class OutOfMemoryAtGroup:
    """Replaces ``point_evaluator.batch_sums``: raises ``torch.cuda.OutOfMemoryError`` once,
    on the first batch of group ``group`` (0-based) of ``calls_per_group`` batches."""

    def __init__(self, group: int, calls_per_group: int) -> None:
        self.raise_at = group * calls_per_group
        self.calls = 0
        self.batch_sizes: list[int] = []

    def __call__(self, *args: Any) -> tuple[Tensor, Tensor]:
        self.calls += 1
        if self.calls - 1 == self.raise_at:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected by the test)")
        self.batch_sizes.append(int(args[-1].shape[0]))
        return forward.batch_sums(*args)


def test_out_of_memory_at_a_later_group_halves_and_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Memory that sufficed for two groups runs out at the third (another process took it):
    the batch is halved, that group computed again, and every value equals an undisturbed
    run."""
    model, dirs, data = setup(ConvBNNet)  # train 96, test 32: 3 + 1 batches of 32
    coords = np.random.default_rng(4).uniform(-1, 1, size=(5, 2))
    options = EngineOptions(workers=1, compile=False, batch_size=32)
    with GridEvaluator(model, dirs, data, options=options) as ev:
        undisturbed = ev.evaluate(coords)
    oom = OutOfMemoryAtGroup(group=2, calls_per_group=4)
    monkeypatch.setattr(point_evaluator, "batch_sums", oom)
    with GridEvaluator(model, dirs, data, options=options) as ev:
        got = ev.evaluate(coords)
        info = ev.describe()
    assert info["oom_retries"] == 1 and info["batch_size"] == 16
    assert oom.batch_sizes[: 2 * 4] == [32] * 8 and set(oom.batch_sizes[2 * 4 :]) == {16}
    for key, ref in undisturbed.items():
        np.testing.assert_array_equal(got[key][:2], ref[:2], err_msg=key)  # before the error
        if key.endswith("_loss"):
            np.testing.assert_allclose(got[key], ref, rtol=1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(got[key], ref, err_msg=key)
    assert_same(got, reference_evaluate(model, dirs, coords, data), len(data["test"][0]))


def test_out_of_memory_at_one_sample_and_one_point_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, dirs, data = setup(ConvBNNet, n=6)
    oom = OutOfMemory(times=100)
    monkeypatch.setattr(forward, "logits_at", oom)
    with (
        pytest.raises(
            torch.cuda.OutOfMemoryError,
            match=r"even at one grid point per call and "
            r"batch 1, after 3 halving\(s\)",
        ),  # fmt: skip
        GridEvaluator(model, dirs, data, options=EngineOptions(workers=1, compile=False)) as ev,
    ):
        ev.evaluate(np.zeros((1, 2)))
    assert oom.left == 100 - 4  # batch 6 → 3 → 2 → 1, then the error is the caller's


def _mock_cuda_memory(
    monkeypatch: pytest.MonkeyPatch, *, free: int, total: int, reserved: int, allocated: int,
    fraction: float = 1.0,
) -> None:  # fmt: skip
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, total))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: reserved)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: allocated)
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda device=None: fraction)


def test_processes_on_one_gpu_size_from_their_share(monkeypatch: pytest.MonkeyPatch) -> None:
    gib = 2**30
    cuda = torch.device("cuda:0")  # a device object only: nothing runs on it
    _mock_cuda_memory(monkeypatch, free=40 * gib, total=80 * gib, reserved=2 * gib,
                      allocated=gib)  # fmt: skip
    assert plan.free_cuda_bytes(cuda) == 41 * gib  # free + this process's unused cache
    assert plan.free_cuda_bytes(cuda, processes=2) == 21 * gib  # half the free memory each
    # a fraction set for this process caps what its allocator may still reserve
    _mock_cuda_memory(monkeypatch, free=70 * gib, total=80 * gib, reserved=2 * gib,
                      allocated=gib, fraction=0.25)  # fmt: skip
    assert plan.free_cuda_bytes(cuda) == (20 - 2) * gib + gib
    # the batch the engine picks: two processes on the device each get half of one's
    model, _, data = setup(ConvBNNet, n=10**6 // 100)
    _mock_cuda_memory(monkeypatch, free=2**24, total=2**30, reserved=0, allocated=0)
    one = plan.pick_batch_size(model, data, cuda)
    two = plan.pick_batch_size(model, data, cuda, processes=2)
    assert 1 < one < 10**4 and two == one // 2
    k_one = plan.max_points_per_call(model, data, 16, cuda)
    assert plan.max_points_per_call(model, data, 16, cuda, processes=2) < k_one


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
