"""Worker processes sharing one GPU size from their own share of its memory."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from api.settings import Settings
from api.worker import cap_gpu_memory
from landscape.engine import pool as engine_pool
from landscape.engine.plan import free_cuda_bytes


def test_the_fraction_caps_every_visible_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[float, int]] = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(
        torch.cuda, "set_per_process_memory_fraction", lambda f, i: calls.append((f, i))
    )
    cap_gpu_memory(0.5)
    assert calls == [(0.5, 0), (0.5, 1)]
    calls.clear()
    cap_gpu_memory(None)  # unset: the whole GPU, nothing touched
    assert calls == []


def test_a_capped_worker_sizes_from_its_share(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the engine sizes batches from, once the fraction is set: half the GPU, not all
    that is free (mocked memory queries: 80 GiB total, 70 free, nothing reserved)."""
    gib = 2**30
    fraction = {"value": 1.0}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (70 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    monkeypatch.setattr(
        torch.cuda, "get_per_process_memory_fraction", lambda device=None: fraction["value"]
    )
    monkeypatch.setattr(
        torch.cuda,
        "set_per_process_memory_fraction",
        lambda f, i: fraction.__setitem__("value", f),
    )
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    device = torch.device("cuda:0")
    assert free_cuda_bytes(device) == 70 * gib
    cap_gpu_memory(Settings(gpu_memory_fraction=0.5).gpu_memory_fraction)
    assert free_cuda_bytes(device) == 40 * gib


def test_the_engines_gpu_processes_inherit_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda device=None: 0.25)
    assert engine_pool._memory_cap("cuda:0") == 0.25
    assert engine_pool._memory_cap("cpu") == 1.0
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert engine_pool._memory_cap("cuda:0") == 1.0  # no CUDA yet: nothing was capped


@pytest.mark.parametrize("bad", [0, -0.1, 1.5])
def test_a_fraction_outside_zero_to_one_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="gpu_memory_fraction"):
        Settings(gpu_memory_fraction=bad)
