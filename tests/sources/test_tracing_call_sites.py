"""Every torch.fx trace of the library goes through ``landscape.engine.fx_trace``: a direct
``torch.fx.symbolic_trace`` patches ``nn.Module.__call__`` for the whole process while it
runs, and a model another thread (a second job of the service) runs meanwhile fails."""

from __future__ import annotations

import ast
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from landscape.models import build
from landscape.sources.model_source import plan_engine
from landscape.sources.modules import module_description
from landscape.specs import EngineOptions

ROOT = Path(__file__).resolve().parents[2]
TRACER = ROOT / "landscape" / "engine" / "fx_trace.py"


def _direct_traces(source: str) -> list[int]:
    """Lines of ``source`` that reach torch's own ``symbolic_trace``: ``fx.symbolic_trace``,
    ``torch.fx.symbolic_trace``, or importing the name from ``torch.fx``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Attribute) and node.attr == "symbolic_trace") or (
            isinstance(node, ast.ImportFrom)
            and (node.module or "").startswith("torch")
            and any(alias.name == "symbolic_trace" for alias in node.names)
        ):
            lines.append(node.lineno)
    return lines


def test_no_module_but_the_tracer_calls_torch_fx_symbolic_trace() -> None:
    found = {
        f"{path.relative_to(ROOT)}:{line}"
        for package in ("landscape", "api", "bench")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != TRACER
        for line in _direct_traces(path.read_text())
    }
    assert found == set()
    seen = "from torch import fx\nfx.symbolic_trace(m)\nfrom torch.fx import symbolic_trace\n"
    assert sorted(_direct_traces(seen)) == [2, 3]  # what the scan looks for, it sees


def _resnet() -> nn.Module:
    return build("resnet20", in_channels=1, num_classes=10, image_size=8).eval()


def _data() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {"train": (torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))}


CALL_SITES: dict[str, Callable[[nn.Module], object]] = {
    "module_description": module_description,
    "plan_engine": lambda model: plan_engine(model, _data(), EngineOptions(device="cpu")),
}


@pytest.mark.parametrize("site", sorted(CALL_SITES))
def test_a_call_site_traces_while_another_thread_runs_a_model(site: str) -> None:
    """Another thread's forward passes stay exact while ``site`` traces, again and again."""
    runner = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        expected = runner(x)
    errors: list[BaseException] = []
    stop = threading.Event()

    def forwards() -> None:
        while not stop.is_set():
            try:
                with torch.no_grad():
                    torch.testing.assert_close(runner(x), expected)
            except BaseException as exc:  # reported to the test thread
                errors.append(exc)
                return

    thread = threading.Thread(target=forwards)
    thread.start()
    try:
        model = _resnet()
        results = [CALL_SITES[site](model) for _ in range(20)]
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert all(result == results[0] for result in results)
