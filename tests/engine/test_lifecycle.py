"""What an evaluator holds and when it lets go: a closed evaluator frees its core, model,
directions and data at once; memory is sized counting the allocator's cached blocks; results
cross to the host once per group of points, with no unused copies."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from landscape.engine import plan
from landscape.engine.evaluator import GridEvaluator
from landscape.specs import EngineOptions
from tests.engine.test_compile import mlp
from tests.engine.test_engine import EAGER, ConvBNNet, setup


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    """Only reference counting frees objects: what a cycle holds stays held."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.parametrize(
    ("make", "options"),
    [
        (ConvBNNet, EAGER),
        pytest.param(mlp, EngineOptions(workers=1, compile="always"), marks=pytest.mark.slow),
    ],
    ids=["eager", "compiled"],
)
def test_close_frees_the_core_and_its_tensors_at_once(
    no_cyclic_gc: None, make: Any, options: EngineOptions
) -> None:
    model, dirs, data = setup(make)
    ev = GridEvaluator(model, dirs, data, options=options)
    ev.evaluate(np.zeros((2, 2)))
    core = ev._core
    assert core is not None
    module = core.module  # a torch.fx GraphModule when BN is folded: in a cycle with its graph
    refs = {
        "core": weakref.ref(core),
        "data": weakref.ref(core.data["train"].xs[0]),
        "direction": weakref.ref(next(iter(core.stacked.values()))),
        "theta": weakref.ref(next(iter(core.base.values()))),
    }
    compiled = core.compiled
    del core
    ev.close()
    assert {name: ref() is None for name, ref in refs.items()} == dict.fromkeys(refs, True)
    assert all(t.is_meta for t in (*module.parameters(), *module.buffers()))
    info = ev.describe()  # still answers after close, from the snapshot taken then
    assert info["compiled"] is compiled and info["timings"]["points"] == 2


def _fake_cuda_memory(
    monkeypatch: pytest.MonkeyPatch, *, free: int, reserved: int, allocated: int
) -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 10 * free))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: reserved)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: allocated)


def test_memory_sizing_counts_blocks_the_allocator_holds_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``mem_get_info`` counts this process's cached-but-free blocks as used; the batch size
    and the K ceiling count them as free (e.g. after an earlier evaluator in the process)."""
    model, _, data = setup(ConvBNNet, n=10_000)
    cuda = torch.device("cuda")  # only the sizing arithmetic runs: no GPU needed
    per_sample = plan.activation_bytes_per_sample(model, data)
    _fake_cuda_memory(monkeypatch, free=100 * per_sample, reserved=0, allocated=0)
    assert plan.free_cuda_bytes(cuda) == 100 * per_sample
    assert plan.pick_batch_size(model, data, cuda) == 100 // 16
    k_alone = plan.max_points_per_call(model, data, 6, cuda)
    # the same driver figure with 300 samples' worth cached free by the allocator
    _fake_cuda_memory(
        monkeypatch, free=100 * per_sample, reserved=500 * per_sample, allocated=200 * per_sample
    )
    assert plan.free_cuda_bytes(cuda) == 400 * per_sample
    assert plan.pick_batch_size(model, data, cuda) == 400 // 16
    assert plan.max_points_per_call(model, data, 6, cuda) > k_alone


class _Transfers:
    """Counts what moves results to the host (or waits on the device) while active."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: dict[str, int] = {}
        self.active = False
        for name in ("cpu", "item", "tolist", "numpy", "__bool__", "__float__", "__int__"):
            self._spy(monkeypatch, torch.Tensor, name)
        self._spy(monkeypatch, torch, "as_tensor")  # a host → device copy of coefficients

    def _spy(self, monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> None:
        real = getattr(owner, name)

        def spy(*args: Any, **kwargs: Any) -> Any:
            if self.active:
                self.calls[name] = self.calls.get(name, 0) + 1
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, spy)


@pytest.mark.parametrize(("k", "n_points", "groups"), [(1, 5, 5), (4, 7, 2)])
def test_one_host_transfer_per_group_of_points(
    monkeypatch: pytest.MonkeyPatch, k: int, n_points: int, groups: int
) -> None:
    """Every split's sums are stacked on the device and moved in one ``.cpu()`` per group of
    K points (two splits here), counted in ``host_syncs``; one point per call sends its
    coefficients as Python floats, with no copy to the device."""
    model, dirs, data = setup(ConvBNNet)
    assert len(data) == 2
    options = EngineOptions(workers=1, compile=False, points_per_call=k)
    coords = np.random.default_rng(0).uniform(-1, 1, size=(n_points, 2))
    with GridEvaluator(model, dirs, data, options=options) as ev:
        before = ev.describe()["host_syncs"]
        transfers = _Transfers(monkeypatch)
        transfers.active = True
        ev.evaluate(coords)
        transfers.active = False
        info = ev.describe()
    assert info["host_syncs"] - before == groups
    expected = {"cpu": groups, "numpy": groups}
    if k > 1:
        expected["as_tensor"] = groups  # the K points' coefficients, used by the einsum
    assert transfers.calls == expected
