"""torch.compile: decided on the measured eager time on every device, forced with
compile="always", shared by every evaluator of a process, and reported as it really ran."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import landscape.engine.point_evaluator as point_evaluator
from landscape.engine.evaluator import GridEvaluator, reference_evaluate
from landscape.engine.plan import compile_after_measuring, compile_pays, plan_compile
from landscape.engine.point_evaluator import CoreConfig, PointEvaluator, split_batches
from landscape.errors import SpecError
from landscape.losses import resolve_loss
from landscape.specs import EngineOptions
from tests.engine.test_engine import ConvBNNet, assert_same, noshort_net, setup

FORCED = EngineOptions(workers=1, compile="always")


def mlp() -> nn.Module:
    """No BN, no tiny convs: stays a plain module (not a torch.fx GraphModule) in the engine,
    so evaluators of it share compiled graphs."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def test_compile_option_is_true_false_or_always() -> None:
    for ok in (True, False, "always"):
        assert EngineOptions(compile=ok).compile == ok  # type: ignore[arg-type]
    for bad in ("sometimes", "Always", 1, None):
        with pytest.raises(SpecError, match=r"compile must be True .* False .* 'always'"):
            EngineOptions(compile=bad)  # type: ignore[arg-type]


def test_cuda_weighs_measured_eager_time_against_compile_cost() -> None:
    # 21×21 resnet20 on digits, ~1 ms per point eager: 0.1 s to save, 30 s to compile
    pays, why = compile_after_measuring(1e-3, 441, "cuda", "tf32")
    assert not pays and "441 points left" in why and "30%" in why and "~30 s compile" in why
    # ResNet-56 on CIFAR-10, 0.79 s per point in strict fp32 (docs/performance.md), 51×51
    assert compile_after_measuring(0.79, 51 * 51, "cuda", "fp32")[0]
    # the saving grows with reduced precision: the same time pays in bf16, not in fp32
    assert compile_after_measuring(0.2, 500, "cuda", "bf16")[0]
    assert not compile_after_measuring(0.2, 500, "cuda", "fp32")[0]
    # each split's batch shape is its own graph: two splits cost two compiles
    assert compile_after_measuring(0.3, 500, "cuda", "tf32", splits=1)[0]
    assert not compile_after_measuring(0.3, 500, "cuda", "tf32", splits=2)[0]
    # up front, CUDA no longer compiles by FLOP count: the workers measure, then decide
    model, _, data = setup(noshort_net)
    cuda = torch.device("cuda")  # a device object only: nothing runs on it
    assert compile_pays(model, data, cuda, n_points=5)
    assert plan_compile(True, model, data, cuda, n_points=5, workers=1)[0] is True
    assert plan_compile("always", model, data, cuda, n_points=5, workers=1)[0] == "always"
    mode, why = plan_compile(False, model, data, cuda, n_points=5, workers=1)
    assert mode is False and "off" in why
    mode, why = plan_compile(True, model, data, torch.device("cpu"), n_points=25, workers=2)
    assert mode is False and "slow core" in why


def test_the_k_trial_measurement_decides_compile_at_once() -> None:
    """Where K is timed (CUDA), the trial's eager time per point is what compiling is weighed
    against, before any point is evaluated (run here on the CPU: same code path)."""
    model, dirs, data = setup(ConvBNNet)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    batches = {s: split_batches(x, y, 96, torch.device("cpu"), True) for s, (x, y) in data.items()}
    config = CoreConfig(
        resolve_loss("cross_entropy"),
        "cpu",
        96,
        0,
        True,
        True,
        max_points_per_call=2,
        compile_share=9,
    )
    core = PointEvaluator(model, params, dirs, batches, config)
    info = core.describe()
    assert "measured eager" in info["compile_reason"] and "9 points left" in info["compile_reason"]
    assert info["compiled"] is False and info["compile_s"] == 0.0  # 9 points never pay


@pytest.mark.parametrize("failure", ["raises", "differs", "falls back"])
def test_compiled_is_false_when_compile_did_not_compute_the_points(
    monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    calls = {"n": 0}

    def make(fn: Callable[..., Any], key: str | None = None) -> Callable[..., Any]:
        def run(*args: Any) -> tuple[Tensor, Tensor]:
            calls["n"] += 1
            loss_sum, correct = fn(*args)
            if failure == "raises":
                raise RuntimeError("inductor could not compile this")
            if failure == "differs":
                return loss_sum * 2, correct
            if calls["n"] > 2:  # the check (one batch per split) passes; then it breaks
                raise RuntimeError("a guard failed at run time")
            return loss_sum, correct

        return run

    monkeypatch.setattr(point_evaluator, "compiled", make)  # stands in for torch.compile
    model, dirs, data = setup(ConvBNNet)
    coords = np.random.default_rng(0).uniform(-1, 1, size=(3, 2))
    with GridEvaluator(model, dirs, data, options=FORCED) as ev:
        got = ev.evaluate(coords)
        info = ev.describe()
    assert info["compiled"] is False and "compile" not in info["method"]
    assert info["compile_reason"].startswith("forced")
    assert len(info["compile_errors"]) == 1
    if failure == "falls back":
        assert info["compile_errors"][0].startswith("fell back to eager")
    assert_same(got, reference_evaluate(model, dirs, coords, data), len(data["test"][0]))


def _dynamo_counts() -> tuple[int, int]:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"]), int(counters["frames"]["total"])


@pytest.mark.slow
def test_evaluators_share_compiled_code_and_all_report_compiled() -> None:
    """Six evaluators built and closed in one process: each one's points are computed by the
    compiled path, and the graphs compiled for the first serve the other five (one per split
    shape), where dynamo used to re-trace per evaluator and go eager after eight."""
    model, dirs, data = setup(mlp)
    coords = np.random.default_rng(1).uniform(-1, 1, size=(3, 2))
    ref = reference_evaluate(model, dirs, coords, data)
    counts = []
    for _ in range(6):
        with GridEvaluator(model, dirs, data, options=FORCED) as ev:
            got = ev.evaluate(coords)
            info = ev.describe()
        assert info["compiled"] is True and info["method"] == "per-point + compile", info
        assert not info["compile_errors"]
        assert_same(got, ref, len(data["test"][0]))
        counts.append(_dynamo_counts())
    assert counts[1:] == counts[:1] * 5, counts  # nothing traced again after the first


@pytest.mark.slow
def test_bn_folded_evaluators_stay_compiled_past_dynamos_default_limit() -> None:
    """A BN-folded module is a GraphModule, a class of its own per evaluator; evaluators of one
    architecture still share its graphs. Past dynamo's default limit of 8 (four two-split
    evaluators) they are compiled, and six add at most one graph per split in all (40:
    ``tests/engine/test_shared_graphs.py``)."""
    model, dirs, data = setup(ConvBNNet)
    coords = np.zeros((1, 2))
    before = _dynamo_counts()
    for i in range(6):
        with GridEvaluator(model, dirs, data, options=FORCED) as ev:
            ev.evaluate(coords)
            info = ev.describe()
        assert info["bn_folded"] > 0 and info["compiled"] is True, (i, info)
    graphs, frames = (a - b for a, b in zip(_dynamo_counts(), before, strict=True))
    assert graphs <= len(data) and frames <= len(data)


@pytest.mark.slow
def test_a_spent_recompile_budget_is_reported_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """When dynamo's budget for the engine's function is spent, the evaluator says so
    (compiled=False, the error kept) and computes eagerly, instead of claiming compile."""
    import landscape.engine.forward as forward
    from landscape.engine import shared_graphs

    # one graph at most: a new two-split evaluator's second split is always over budget (new:
    # no compiled graphs of this architecture from earlier tests)
    monkeypatch.setattr(forward, "_RECOMPILE_LIMIT", 1)
    monkeypatch.setattr(shared_graphs, "_entries", type(shared_graphs._entries)())
    model, dirs, data = setup(ConvBNNet)
    coords = np.zeros((2, 2))
    with GridEvaluator(model, dirs, data, options=FORCED) as ev:
        got = ev.evaluate(coords)
        info = ev.describe()
    assert info["compiled"] is False and "compile" not in info["method"]
    assert "RecompileLimit" in info["compile_errors"][0]
    assert_same(got, reference_evaluate(model, dirs, coords, data), len(data["test"][0]))
