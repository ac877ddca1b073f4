"""The queue's rates stay right when the jobs that finished here say little or mislead: a
replay of finished jobs like those a deployment saw, fed to ``Throughput.fit``. Tiny jobs are
nearly all overhead and must not set the rate; one mis-estimated job of one kind must not move
the others; one fast start must not set every job's overhead; a deployment that really is
slower is still learned, within bounds."""

from __future__ import annotations

import random

import pytest

from api.schedule import KIND_BOUND, KIND_PRIORS, PRIOR_FLOPS_PER_SECOND, Run, Throughput

CPU = PRIOR_FLOPS_PER_SECOND["cpu"]
FORM_FLOPS = 8.5e10  # the README's 11×11 form job (30 epochs of mlp-plain on digits)


def prior() -> Throughput:
    return Throughput.fit([], CPU)


def fitted(runs: list[Run]) -> Throughput:
    """``runs`` oldest first, as they finished; the fit reads the newest first."""
    return Throughput.fit(list(reversed(runs)), CPU)


def true_seconds(kind: str, flops: float, slower: float = 1.0) -> float:
    """What a job takes on the machine the priors were calibrated on (``slower`` times it)."""
    return slower * (prior().seconds(flops, kind) or 0.0)


def tiny_jobs(count: int, seed: int = 0) -> list[Run]:
    """Small surfaces of 1e7 to 1e9 FLOPs: their time is overhead, plus load noise (some took
    twice as long as others)."""
    rng = random.Random(seed)
    runs = []
    for _ in range(count):
        flops = 10 ** rng.uniform(7, 9)
        runs.append(Run("surface", flops, true_seconds("surface", flops) * rng.uniform(0.8, 2.0)))
    return runs


def test_twelve_tiny_jobs_leave_the_form_jobs_estimate_where_it_was() -> None:
    before = prior().seconds(FORM_FLOPS, "surface")
    after = fitted(tiny_jobs(12)).seconds(FORM_FLOPS, "surface")
    assert before is not None and after is not None
    assert before / 2 <= after <= before * 2, (before, after)  # was 2.9 h: 8.1e6 FLOP/s
    assert after < 120  # minutes, not hours


def test_one_over_estimated_job_moves_no_other_kind_and_its_own_little() -> None:
    history = tiny_jobs(6) + [Run("hessian", 5e11, true_seconds("hessian", 5e11)) for _ in range(4)]
    base = fitted(history)
    flops = 2e12  # a sharpness job that ran 40× faster than estimated
    odd = fitted([*history, Run("sharpness", flops, true_seconds("sharpness", flops) / 40)])
    for kind in ("surface", "hessian", "report", "gradient_flow"):
        assert odd.rate(kind) == base.rate(kind), kind
    moved = odd.rate("sharpness").flops_per_second / base.rate("sharpness").flops_per_second
    assert 1 / 2 <= moved <= 2, moved  # was 9.4× for every kind


def test_one_fast_start_does_not_set_every_jobs_overhead() -> None:
    history = tiny_jobs(8)
    base = fitted(history)
    quick = fitted([*history, Run("surface", 1e6, 0.3)])
    assert quick.rate("surface").overhead_s == pytest.approx(
        base.rate("surface").overhead_s, rel=0.2
    )
    assert quick.rate("surface").overhead_s > 3 * 0.3


def test_a_slower_deployment_is_learned_per_kind_and_bounded() -> None:
    runs = [Run("surface", f, true_seconds("surface", f, slower=3)) for f in (2e11, 5e11, 1e12)]
    runs += [Run("hessian", f, true_seconds("hessian", f, slower=3)) for f in (3e11, 6e11, 9e11)]
    learned = fitted(runs)
    for kind in ("surface", "hessian"):
        estimate = learned.seconds(4e11, kind) or 0.0
        assert estimate == pytest.approx(true_seconds(kind, 4e11, slower=3), rel=0.25), kind
    # Sharpness jobs 100× faster than estimated, again and again: bounded to the pooled rate.
    fast = [Run("sharpness", f, true_seconds("sharpness", f) / 100) for f in (1e12, 2e12, 3e12)]
    bounded = fitted(runs + fast)
    pooled = bounded.flops_per_second * KIND_PRIORS["sharpness"].speed
    assert bounded.rate("sharpness").flops_per_second <= KIND_BOUND * pooled * 1.0001
    assert bounded.rate("sharpness").samples == 3 and "measured rate" in bounded.basis


def test_the_priors_hold_until_jobs_say_otherwise() -> None:
    assumed = prior()
    assert assumed.samples == 0 and "assumed rate" in assumed.basis_for("hessian")
    two = fitted(tiny_jobs(2))  # fewer than MIN_SAMPLES: no correction at all
    assert two.kinds == assumed.kinds
