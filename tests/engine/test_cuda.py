"""What production runs on a GPU: forced compile in fp32 and bf16, K > 1 points per call, two
worker processes on one GPU with one killed and restarted, the measured compile decision, and
PyTorch's switches left as they were after a job. Values against the CPU's naive loop within
the tolerance of the precision under test (docs/performance.md: fp32 strict, tf32 ~3e-4,
bf16 3–5e-3 measured on ResNet-56; bounds here leave room for small, trained-free nets)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from landscape.analysis.hessian import hessian_spectrum
from landscape.engine.batches import split_batches
from landscape.engine.evaluator import GridEvaluator, reference_evaluate
from landscape.engine.point_evaluator import CoreConfig
from landscape.engine.pool import WorkerPool
from landscape.losses import resolve_loss
from landscape.specs import DataSpec, EngineOptions, TrainSpec
from landscape.train import train_model
from tests.engine.test_engine import ConvBNNet, setup, zoo
from tests.engine.test_precision_policy import Switches, switches

pytestmark = pytest.mark.gpu

# relative error of the loss; samples whose predicted class may differ (those on a decision
# boundary: random-weight nets have small margins, which bf16's 8-bit mantissa crosses most)
TOLERANCE = {"fp32": (1e-5, 2.01), "tf32": (2e-3, 3.01), "bf16": (3e-2, 10.01)}


def assert_close(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], precision: str) -> None:
    rtol, flips = TOLERANCE[precision]
    for key in ref:
        if key.endswith("_loss"):
            np.testing.assert_allclose(got[key], ref[key], rtol=rtol, err_msg=key)
        else:
            n = 96 if key.startswith("train") else 32  # setup()'s splits
            np.testing.assert_allclose(got[key], ref[key], rtol=0, atol=flips / n, err_msg=key)


def _surface(options: EngineOptions, n_points: int = 441) -> tuple[dict[str, Any], Any, Any]:
    model, dirs, data = setup(zoo("resnet20"))
    coords = np.random.default_rng(5).uniform(-1, 1, size=(7, 2))
    ref = reference_evaluate(model, dirs, coords, data)
    with GridEvaluator(model, dirs, data, options=options, n_points=n_points) as ev:
        got = ev.evaluate(coords)
        info = ev.describe()
    return info, got, ref


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_forced_compile_matches_the_cpu_reference(precision: str) -> None:
    options = EngineOptions(device="cuda", devices=(0,), precision=precision, compile="always")  # type: ignore[arg-type]
    info, got, ref = _surface(options)
    assert info["compiled"] is True and info["method"].endswith("+ compile"), info
    assert info["precision"] == precision and info["compile_reason"].startswith("forced")
    assert info["oom_retries"] == 0 and info["host_syncs"] > 0
    assert_close(got, ref, precision)


@pytest.mark.parametrize("compile_", [False, "always"])
def test_several_points_per_call_on_cuda(compile_: Any) -> None:
    options = EngineOptions(
        device="cuda", devices=(0,), precision="fp32", points_per_call=4, compile=compile_
    )
    info, got, ref = _surface(options)
    assert info["points_per_call"] == 4 and info["method"].startswith("vmap")
    assert info["compiled"] is (compile_ == "always")
    assert_close(got, ref, "fp32")


@pytest.mark.parametrize("points_per_call", [None, 2])
def test_compile_is_decided_on_the_measured_eager_time(points_per_call: int | None) -> None:
    """resnet20 on 8×8 inputs takes a few ms per point: a 21×21 grid cannot repay ~30 s of
    compile per split, so it stays eager, with the numbers in the reason — timed in the K
    trial, or at the K set (after a warm-up either way)."""
    options = EngineOptions(
        device="cuda", devices=(0,), precision="fp32", points_per_call=points_per_call
    )
    info, got, ref = _surface(options)
    assert info["compile_reason"].startswith("measured eager"), info
    assert "points left" in info["compile_reason"] and info["compiled"] is False
    assert info["timings"]["compile_s"] == 0.0
    assert_close(got, ref, "fp32")


def test_two_workers_on_one_gpu_survive_a_killed_worker() -> None:
    model, dirs, data = setup(ConvBNNet, n=600)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    batches = {s: split_batches(x, y, 64, torch.device("cpu"), True) for s, (x, y) in data.items()}
    config = CoreConfig(
        resolve_loss("cross_entropy"), "cuda:0", 64, 1, False, True, precision="fp32"
    )
    chunks = [np.random.default_rng(i).uniform(-1, 1, size=(6, 2)) for i in range(12)]
    pool = WorkerPool(["cuda:0", "cuda:0"])
    try:
        pool.load((model, params, dirs, batches, config))
        victim = pool.pids()[0]
        got: dict[int, dict[str, np.ndarray]] = {}
        for task, values, _ in pool.run(enumerate(chunks)):
            if not got:
                os.kill(victim, signal.SIGKILL)  # a real signal, mid-run
            got[task] = values
        assert pool.restarts == 1 and victim not in pool.pids()
        assert all(info["device"] == "cuda:0" for info in pool.info)
    finally:
        pool.close(kill=True)
    assert sorted(got) == list(range(len(chunks)))
    for task, coords in enumerate(chunks):
        ref = reference_evaluate(model, dirs, coords, data)
        for key in ref:
            tol = {"rtol": 1e-5} if key.endswith("_loss") else {"rtol": 0, "atol": 2.01 / 200}
            np.testing.assert_allclose(got[task][key], ref[key], **tol, err_msg=key)


@pytest.fixture
def odd_switches() -> Any:
    """Matmul precision and cuDNN TF32 away from PyTorch's defaults, as a notebook might leave
    them; cuDNN autotuning off, which the engine turns on only while it computes."""
    saved = switches()
    torch.set_float32_matmul_precision("medium")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    try:
        yield switches()
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved[1:]


def test_switches_are_left_as_they_were_after_each_job(
    tmp_path: Path, odd_switches: Switches
) -> None:
    for precision in ("tf32", "bf16"):
        options = EngineOptions(device="cuda", devices=(0,), precision=precision, compile="always")  # type: ignore[arg-type]
        info, _, _ = _surface(options)
        assert info["compiled"] is True
        assert switches() == odd_switches
    model, _, data = setup(ConvBNNet)
    result = hessian_spectrum(model, data["train"], top=1, device="cuda")
    assert result.settings["precision"] == "fp32" and result.settings["device"].startswith("cuda")
    assert switches() == odd_switches
    spec = TrainSpec(
        model="resnet20", data=DataSpec(train_size=64, test_size=32), epochs=1, device="cuda"
    )
    assert train_model(spec, tmp_path / "r.pt")["precision"] == "fp32"
    assert switches() == odd_switches
