"""One precision policy for every path: the surface engine, the regression path, Hessian
products and training each compute inside ``compute_in`` — TF32 off for strict fp32 — and
leave PyTorch's process-global switches exactly as they found them."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import landscape.engine.forward as forward
from landscape.analysis.hessian import HessianOperator, hessian_spectrum
from landscape.directions import make_directions
from landscape.engine.evaluator import GridEvaluator
from landscape.engine.precision import precision_flags
from landscape.engine.regression import RegressionEvaluator
from landscape.errors import SpecError
from landscape.specs import DataSpec, DirectionSpec, EngineOptions, TrainSpec
from landscape.train import train_model
from tests.engine.test_engine import EAGER, ConvBNNet, setup

Switches = tuple[str, bool, bool]


def switches() -> Switches:
    return (
        torch.get_float32_matmul_precision(),
        bool(torch.backends.cudnn.allow_tf32),
        bool(torch.backends.cudnn.benchmark),
    )


@pytest.fixture
def odd_switches() -> Iterator[Switches]:
    """Every switch set away from PyTorch's default (highest, True, False) for the test, as a
    notebook might leave them; put back afterwards."""
    saved = switches()
    torch.set_float32_matmul_precision("medium")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    try:
        yield switches()
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved[1:]


def test_precision_flags_set_and_restore_the_switches(odd_switches: Switches) -> None:
    with precision_flags("fp32"):
        assert switches()[:2] == ("highest", False)
    assert switches() == odd_switches
    with precision_flags("tf32", autotune=True):
        assert switches() == ("high", True, True)
    assert switches() == odd_switches
    with pytest.raises(ValueError, match="boom"), precision_flags("bf16"):
        assert switches()[:2] == ("high", True)
        raise ValueError("boom")
    assert switches() == odd_switches


def test_precision_flags_in_a_process_using_torchs_fp32_precision_api() -> None:
    """Once a process sets TF32 through ``torch.backends.*.fp32_precision`` (torch ≥ 2.9), the
    older switches cannot be read any more: the policy then speaks the newer API (run in a
    child process: that state cannot be undone)."""
    if not hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        pytest.skip("torch < 2.9 has no fp32_precision API")
    code = textwrap.dedent(
        """
        import torch
        from landscape.engine.precision import precision_flags
        b = torch.backends
        b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision = "tf32", "tf32"
        with precision_flags("fp32"):
            inside = (b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision)
        print(inside, (b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision))
        """
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True
    )
    assert out.stdout.strip() == "('ieee', 'ieee') ('tf32', 'tf32')"


class _Recorder:
    """Wraps a forward function: records the switches each call ran under."""

    def __init__(self, real: Callable[..., Tensor]) -> None:
        self.real = real
        self.seen: set[Switches] = set()

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        self.seen.add(switches())
        return self.real(*args, **kwargs)


def test_engine_computes_in_strict_fp32_and_restores(
    monkeypatch: pytest.MonkeyPatch, odd_switches: Switches
) -> None:
    recorder = _Recorder(forward.logits_at)
    monkeypatch.setattr(forward, "logits_at", recorder)
    model, dirs, data = setup(ConvBNNet)
    with GridEvaluator(model, dirs, data, options=EAGER) as ev:
        assert switches() == odd_switches  # between calls too: nothing set for the process
        ev.evaluate(np.zeros((2, 2)))
        assert ev.describe()["precision"] == "fp32"
    assert recorder.seen == {("highest", False, True)}  # autotuning on: identical shapes
    assert switches() == odd_switches


class _Regressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 2))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # type: ignore[no-any-return]


def test_regression_path_records_its_precision_and_restores(odd_switches: Switches) -> None:
    model = _Regressor()
    x = torch.randn(40, 1, 8, 8)
    data = {"train": (x, torch.randn(40, 2))}
    dirs = [{n: torch.randn_like(p) for n, p in model.named_parameters()}]
    with RegressionEvaluator(model, dirs, data, options=EngineOptions(device="cpu")) as ev:
        values = ev.evaluate(np.array([[0.0], [0.5]]))
        info = ev.describe()
    assert info["precision"] == "fp32" and info["dtype"] == "float32"
    assert info["host_syncs"] == 2 and info["compiled"] is False and info["oom_retries"] == 0
    with torch.no_grad():  # in float64: "medium" runs float32 matmuls in bf16 on AMX CPUs
        exact = copy.deepcopy(model).double()
        expected = float(((exact(x.double()) - data["train"][1].double()) ** 2).mean())
    assert values["train_loss"][0] == pytest.approx(expected, rel=1e-6)
    assert switches() == odd_switches
    bf16 = EngineOptions(device="cpu", precision="bf16")
    with pytest.raises(SpecError, match="needs a CUDA device"):
        RegressionEvaluator(model, dirs, data, options=bf16)


def test_hessian_products_are_strict_fp32_and_restore(
    monkeypatch: pytest.MonkeyPatch, odd_switches: Switches
) -> None:
    model, _, data = setup(ConvBNNet, n=24)
    x, y = data["train"]
    seen: set[Switches] = set()
    real = HessianOperator._logits

    def logits(self: HessianOperator, params: Any, xb: Tensor) -> Tensor:
        seen.add(switches())
        return real(self, params, xb)

    monkeypatch.setattr(HessianOperator, "_logits", logits)
    result = hessian_spectrum(model, (x, y), top=1, device="cpu")
    assert result.settings["precision"] == "fp32"
    assert seen == {("highest", False, True)}  # TF32 off; autotuning left as the caller had it
    assert switches() == odd_switches
    _, info = make_directions(model, DirectionSpec(kind="hessian"), 1, data=(x, y), device="cpu")
    assert info["precision"] == "fp32" and info["device"] == "cpu"
    assert switches() == odd_switches
    for bad, message in (("bf16", "fp32 or tf32"), ("tf32", "needs a CUDA device")):
        with pytest.raises(SpecError, match=message):
            HessianOperator(model, (x, y), device="cpu", precision=bad)  # type: ignore[arg-type]


def test_training_is_strict_fp32_recorded_and_restores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, odd_switches: Switches
) -> None:
    seen: set[Switches] = set()
    real = nn.Linear.forward

    def forward_(self: nn.Linear, x: Tensor) -> Tensor:
        seen.add(switches())
        return real(self, x)

    monkeypatch.setattr(nn.Linear, "forward", forward_)
    spec = TrainSpec(
        model="mlp-plain", data=DataSpec(train_size=64, test_size=32), epochs=1, device="cpu"
    )
    metadata = train_model(spec, tmp_path / "mlp.pt")
    assert metadata["precision"] == "fp32"
    assert seen == {("highest", False, True)}
    assert switches() == odd_switches
