"""The report's forecast: one estimate per step of ``reproduce``, in its order and named as
its progress names them, from unit costs timed here (waiting for CUDA work to finish); cached
steps cost nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from landscape.report import estimate
from landscape.report.estimate import UnitCosts, estimate_report, minutes, step_estimates
from landscape.report.reproduce import reproduce
from tests.report.test_reproduce import TINY


@pytest.mark.slow
def test_the_forecast_names_every_step_and_cached_steps_cost_nothing(tmp_path: Path) -> None:
    before = estimate_report(TINY, tmp_path)
    assert all(step.seconds > 0 for step in before)
    stages: list[str] = []
    reproduce(TINY, tmp_path, on_progress=lambda what, done, total: stages.append(what))
    assert [step.what for step in before] == stages[:-1]  # the last is "report written"
    assert sum(step.seconds for step in estimate_report(TINY, tmp_path)) == 0


def test_step_seconds_follow_the_recipe_counts(tmp_path: Path) -> None:
    """Training is epochs × steps per epoch; a surface n² forward passes; more Lanczos
    products cost more analysis time, in proportion to the product's time."""
    units = {m: UnitCosts(0.01, 0.1, 0.02, 0.05) for m in TINY.models}
    steps = {s.what: s.seconds for s in step_estimates(TINY, tmp_path, units, n_train=120)}
    train = steps["train mlp-plain seed 0"]
    assert train == pytest.approx(TINY.epochs * (1 * 0.01 + 0.02) + 0.1 + 0.02)
    small, large = (
        steps["surface mlp-plain seed 0 ±0.25 5×5"],
        steps["surface mlp-plain seed 0 ±1 5×5"],
    )
    assert small == large and small == pytest.approx(4.0 + 25 * 0.1)
    deeper = TINY.__class__(**{**TINY.__dict__, "curvature_steps": 60})
    slow = {s.what: s.seconds for s in step_estimates(deeper, tmp_path, units, n_train=120)}
    what = "Hessian, gradient flow and sharpness mlp-plain seed 0"
    assert slow[what] - steps[what] == pytest.approx(TINY.curvature_points**2 * 30 * 0.05)


def test_minutes_are_worded_to_a_forecast_precision() -> None:
    assert minutes(20) == "under a minute"
    assert minutes(7 * 60 + 10) == "about 7 minutes"
    assert minutes(3 * 3600) == "about 3.0 hours"


@pytest.mark.parametrize(("device", "waits"), [("cuda", 2 * 3), ("cuda:1", 2 * 3), ("cpu", 0)])
def test_each_timed_run_waits_for_cuda_work(
    monkeypatch: pytest.MonkeyPatch, device: str, waits: int
) -> None:
    """CUDA kernels run asynchronously: a timer that does not wait for them before it starts
    and before it stops times their launch. Each of the 3 timed runs is bracketed by a wait
    on the run's device; the untimed warm-up and CPU runs are not."""
    events: list[object] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: events.append(d))
    estimate._timed(lambda: events.append("run"), torch.device(device), repeats=3)
    target = torch.device(device)
    expected = ["run"] + [target, "run", target] * 3 if waits else ["run"] * 4
    assert events == expected


def test_every_unit_is_timed_on_the_recipe_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """``time_units`` hands its device to each timer (so each waits where the work runs)."""
    devices: list[torch.device] = []
    timed = estimate._timed

    def spy(run: object, device: torch.device, repeats: int = 3) -> float:
        devices.append(device)
        return timed(run, device, repeats=1)  # type: ignore[arg-type]

    monkeypatch.setattr(estimate, "_timed", spy)
    units = estimate.time_units(TINY, "mlp-plain")
    assert devices == [torch.device("cpu")] * 4  # train step, two forwards, one product
    assert min(units.train_step, units.forward_all, units.forward_test, units.hvp) > 0
