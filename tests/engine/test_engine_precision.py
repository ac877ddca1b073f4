"""Precision is resolved per device and recorded; K (grid points per call) is chosen by
timing and never kept unless it beats one point per call."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape.engine.evaluator import GridEvaluator, reference_evaluate
from landscape.engine.plan import K_TRIAL_MAX_S, choose_points_per_call, resolve_precision
from landscape.engine.point_evaluator import CoreConfig, PointEvaluator, split_batches
from landscape.errors import SpecError
from landscape.losses import resolve_loss
from landscape.specs import EngineOptions
from tests.engine.test_engine import ConvBNNet, assert_same, setup, zoo


def test_auto_precision_is_tf32_on_cuda_and_fp32_on_cpu() -> None:
    assert resolve_precision(EngineOptions(), "cuda") == "tf32"
    assert resolve_precision(EngineOptions(), "cpu") == "fp32"
    assert resolve_precision(EngineOptions(precision="bf16"), "cuda:1") == "bf16"
    assert resolve_precision(EngineOptions(precision="fp32"), "cuda") == "fp32"
    for precision in ("tf32", "bf16"):
        with pytest.raises(SpecError, match="needs a CUDA device"):
            resolve_precision(EngineOptions(precision=precision), "cpu")  # type: ignore[arg-type]


def test_cpu_refuses_reduced_precision_and_records_fp32() -> None:
    model, dirs, data = setup(ConvBNNet)
    with pytest.raises(SpecError, match=r"bf16.*CUDA"):
        GridEvaluator(model, dirs, data, options=EngineOptions(device="cpu", precision="bf16"))
    with GridEvaluator(model, dirs, data, options=EngineOptions(workers=1, compile=False)) as ev:
        info = ev.describe()
    assert info["precision"] == "fp32" and info["points_per_call"] == 1
    assert info["points_per_call_reason"]


def test_k_is_kept_only_when_it_beats_one_point_per_call() -> None:
    def timer(table: dict[int, float]):  # type: ignore[no-untyped-def]
        return lambda k: table[k]

    assert choose_points_per_call(timer({1: 1e-3, 2: 0.6e-3, 4: 0.4e-3, 8: 0.5e-3}))[0] == 4
    k, reason = choose_points_per_call(timer({1: 1e-3, 2: 0.95e-3, 4: 0.97e-3, 8: 2e-3}))
    assert k == 1 and "no K beat" in reason  # within noise of K = 1: keep K = 1
    tried: list[int] = []

    def slow(k: int) -> float:
        tried.append(k)
        return 2 * K_TRIAL_MAX_S

    assert choose_points_per_call(slow) == (1, choose_points_per_call(slow)[1])
    assert set(tried) == {1}  # a full device is not probed further


def test_measured_k_on_a_real_evaluator_gives_the_reference_values() -> None:
    model, dirs, data = setup(zoo("resnet20"))
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    batches = {s: split_batches(x, y, 96, torch.device("cpu"), True) for s, (x, y) in data.items()}
    config = CoreConfig(
        resolve_loss("cross_entropy"), "cpu", 96, 0, False, True, max_points_per_call=4
    )
    core = PointEvaluator(model, params, dirs, batches, config)
    info = core.describe()
    assert info["points_per_call"] in (1, 2, 4) and "ms" in info["k_reason"]
    coords = np.random.default_rng(3).uniform(-1, 1, size=(5, 2))
    assert_same(core.evaluate(coords), reference_evaluate(model, dirs, coords, data), 32)


@pytest.mark.gpu
def test_cuda_precisions_and_every_visible_gpu() -> None:
    """Defaults on CUDA: TF32, every visible GPU; errors vs strict fp32 within the measured
    orders (tf32 ~3e-4, bf16 ~5e-3 relative)."""
    model, dirs, data = setup(zoo("resnet20"), n=512)
    coords = np.random.default_rng(5).uniform(-1, 1, size=(2 * torch.cuda.device_count() + 3, 2))
    ref = reference_evaluate(model, dirs, coords, data)
    bounds = {"fp32": 1e-4, "tf32": 5e-3, "bf16": 5e-2}
    for precision, bound in bounds.items():
        options = EngineOptions(device="cuda", precision=precision, compile=False)  # type: ignore[arg-type]
        with GridEvaluator(model, dirs, data, options=options) as ev:
            info = ev.describe()
            chunks = np.array_split(coords, 3)
            got = dict(ev.imap(chunks))
        assert info["precision"] == precision
        assert len(info["devices"]) == torch.cuda.device_count()
        loss = np.concatenate([got[i]["train_loss"] for i in range(3)])
        err = np.max(np.abs(loss - ref["train_loss"]) / np.abs(ref["train_loss"]))
        assert err < bound, (precision, err)
    with GridEvaluator(model, dirs, data, options=EngineOptions(device="cuda")) as ev:
        assert ev.describe()["precision"] == "tf32"
