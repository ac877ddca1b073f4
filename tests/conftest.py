"""Shared test set-up: reproducible RNG, GPU tests skipped without CUDA, artifacts folder."""

from __future__ import annotations

import pickle
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is false)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _restore_rng_state() -> Iterator[None]:
    """Each test starts from the same seeds and leaves global RNG state as it found it."""
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    np_state = np.random.get_state()
    py_state = random.getstate()
    torch.manual_seed(0)  # seeds every CUDA device too
    np.random.seed(0)
    random.seed(0)
    yield
    torch.set_rng_state(torch_state)
    if cuda_states is not None:
        torch.cuda.set_rng_state_all(cuda_states)
    np.random.set_state(np_state)
    random.setstate(py_state)


@pytest.fixture
def no_code_loading(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every loader that can unpickle or run code, replaced by one that records the call."""
    calls: list[str] = []

    def spy(name: str, real: object) -> object:
        def wrapper(*args: object, **kwargs: object) -> object:
            calls.append(name)
            return real(*args, **kwargs)  # type: ignore[operator]

        return wrapper

    for owner, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"),
                        (torch, "load"), (torch.jit, "load"), (torch.export, "load")]:  # fmt: skip
        monkeypatch.setattr(owner, name, spy(f"{owner.__name__}.{name}", getattr(owner, name)))
    return calls


@pytest.fixture
def artifacts_dir() -> Path:
    """Where tests leave files worth looking at (screenshots, HTML); kept after the run."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
