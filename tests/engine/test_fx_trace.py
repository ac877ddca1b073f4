"""Tracing a model while another thread runs one (two jobs of the service at once)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from torch import fx, nn

from landscape.engine.fx_trace import symbolic_trace
from landscape.models import build


def _forwards_while_tracing(trace: Callable[[nn.Module], fx.GraphModule]) -> list[BaseException]:
    """Run an MLP forward in a loop on another thread while ``trace`` traces ResNet-20s;
    return what the forward thread raised."""
    runner = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    x = torch.randn(4, 1, 8, 8)
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
        model = build("resnet20", in_channels=1, num_classes=10, image_size=8).eval()
        for _ in range(20):
            gm = trace(model)
            torch.testing.assert_close(gm(torch.ones(2, 1, 8, 8)), model(torch.ones(2, 1, 8, 8)))
    finally:
        stop.set()
        thread.join()
    return errors


def test_other_threads_run_their_models_while_one_traces() -> None:
    assert _forwards_while_tracing(symbolic_trace) == []


def test_traces_from_two_threads_do_not_nest() -> None:
    """Two traces at once: each graph is right and, after both, ``nn.Module.__call__`` is the
    original again (a nested restore would leave a dead tracer's wrapper installed)."""
    original = nn.Module.__call__
    model = build("resnet20", in_channels=1, num_classes=10, image_size=8).eval()
    x = torch.ones(2, 1, 8, 8)
    results: list[bool] = []

    def trace_some() -> None:
        for _ in range(5):
            results.append(torch.allclose(symbolic_trace(model)(x), model(x)))

    threads = [threading.Thread(target=trace_some) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 10
    assert nn.Module.__call__ is original
    assert any(node.op == "call_module" for node in symbolic_trace(model).graph.nodes)
