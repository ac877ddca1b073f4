"""The control-variate estimator against direct computations on synthetic populations."""

from __future__ import annotations

import numpy as np
import pytest

from landscape.errors import SpecError
from landscape.explore import EstimateSpec, parse_target
from landscape.explore.estimator import Centre, estimate, point_sums, simultaneous_z
from landscape.explore.permutation import next_size, split_permutation, stage_sizes
from landscape.explore.stopping import REST, STRADDLES, UNRESOLVED, at_target, priorities


def _population(n: int, seed: int = 0) -> tuple[Centre, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    u = rng.gamma(2.0, 0.3, n)
    v = 1.5 * u + rng.normal(0.0, 0.2, n) ** 2
    cu = (rng.random(n) < 0.8).astype(float)
    cv = np.where(rng.random(n) < 0.1, 1 - cu, cu)
    return Centre(loss=u, correct=cu), v, cv


@pytest.mark.parametrize("method", ["fitted", "difference"])
def test_the_whole_split_gives_the_full_mean_with_no_error(method: str) -> None:
    centre, v, cv = _population(3000)
    sums = point_sums(v[None], cv[None], centre, 0)
    for metric, values in (("loss", v), ("acc", cv)):
        value, se = estimate(sums, centre, metric, method)  # type: ignore[arg-type]
        assert value[0] == pytest.approx(values.mean(), rel=1e-12) and se[0] == 0.0


def test_sums_continue_exactly_when_more_samples_arrive() -> None:
    centre, v, cv = _population(3000)
    whole = point_sums(v[None, :1024], cv[None, :1024], centre, 0)
    parts = point_sums(v[None, :256], cv[None, :256], centre, 0) + point_sums(
        v[None, 256:1024], cv[None, 256:1024], centre, 256
    )
    np.testing.assert_allclose(parts, whole, rtol=1e-12)


def test_fitted_is_the_regression_estimator_and_difference_the_plain_one() -> None:
    centre, v, cv = _population(5000, seed=3)
    n, big_n = 400, 5000
    sums = point_sums(v[None, :n], cv[None, :n], centre, 0)
    u = centre.loss
    beta = np.cov(v[:n], u[:n])[0, 1] / np.var(u[:n], ddof=1)
    fitted = v[:n].mean() - beta * (u[:n].mean() - u.mean())
    resid = v[:n] - beta * u[:n]
    s2 = np.var(resid, ddof=1) * (n - 1) / (n - 2)
    value, se = estimate(sums, centre, "loss", "fitted")
    assert value[0] == pytest.approx(fitted, rel=1e-10)
    assert se[0] == pytest.approx(np.sqrt(s2 / n * (1 - n / big_n)), rel=1e-8)
    d = v[:n] - u[:n]
    value, se = estimate(sums, centre, "loss", "difference")
    assert value[0] == pytest.approx(u.mean() + d.mean(), rel=1e-10)
    assert se[0] == pytest.approx(np.sqrt(np.var(d, ddof=1) / n * (1 - n / big_n)), rel=1e-8)


def test_an_accuracy_with_no_flips_seen_keeps_an_error() -> None:
    centre, _, _ = _population(2000)
    sums = point_sums(centre.loss[None, :256], centre.correct[None, :256], centre, 0)
    _, se = estimate(sums, centre, "acc", "fitted")
    assert se[0] > 0


def test_stopped_intervals_cover_after_optional_stopping() -> None:
    """Points stop at the first stage whose z·SE meets a 2 % target; the stated intervals
    (simultaneous z) cover ≥ 95 % of the true means, where 1.96 at the stopping stage does
    not keep its promise as well."""
    rng = np.random.default_rng(7)
    big_n, stages = 20000, stage_sizes(20000, 256)
    z = simultaneous_z(len(stages) - 1, 0.95)
    covered, naive = [], []
    u = rng.gamma(1.5, 0.4, big_n)
    centre = Centre(loss=u, correct=np.ones(big_n))
    for trial in range(300):
        scale = rng.uniform(0.2, 3.0)
        v = u * (1 + 0.5 * scale) + rng.exponential(scale, big_n)
        order = rng.permutation(big_n)
        c = Centre(loss=u[order], correct=np.ones(big_n))
        for n in stages:
            sums = point_sums(v[order][None, :n], np.ones((1, n)), c, 0)
            value, se = estimate(sums, c, "loss", "fitted")
            if at_target(value, se, z, EstimateSpec(target=0.02))[0]:
                break
        covered.append(abs(value[0] - v.mean()) <= z * se[0] + 1e-12)
        naive.append(abs(value[0] - v.mean()) <= 1.96 * se[0] + 1e-12)
        del trial
    assert np.mean(covered) >= 0.95
    assert np.mean(covered) > np.mean(naive)
    assert centre.size == big_n


def test_simultaneous_z_is_bonferroni() -> None:
    assert simultaneous_z(1, 0.95) == pytest.approx(1.959964, abs=1e-5)
    assert simultaneous_z(8, 0.95) == pytest.approx(2.734369, abs=1e-5)


def test_stages_double_to_the_split_and_the_permutation_is_seeded() -> None:
    assert list(stage_sizes(3000, 256)) == [256, 512, 1024, 2048, 3000]
    assert list(next_size(np.array([0, 256, 2048, 3000]), stage_sizes(3000, 256))) == [
        256, 512, 3000, 3000,
    ]  # fmt: skip
    a, b = split_permutation(1000, 1, "train"), split_permutation(1000, 1, "train")
    assert (a == b).all() and sorted(a) == list(range(1000))
    assert not (a == split_permutation(1000, 1, "test")).all()
    assert not (a == split_permutation(1000, 2, "train")).all()


def test_refinement_puts_straddling_then_unresolved_points_first() -> None:
    value = np.array([0.0, 1.0, 2.0, 10.0, 10.02, 20.0])
    se = np.array([0.001, 0.001, 0.001, 0.01, 0.01, 0.001])
    classes = priorities(value, se, 2.0, (6,))
    assert classes[3] == classes[4] == UNRESOLVED  # |Δ| = 0.02 < 2·√2·0.01
    assert classes[0] == classes[5] == REST
    wide = se.copy()
    wide[2] = 1.0  # 2 ± 2 straddles the level at 20/21
    assert priorities(value, wide, 2.0, (6,))[2] == STRADDLES


@pytest.mark.parametrize(
    ("text", "target", "relative"),
    [("5%", 0.05, True), ("0.01", 0.01, False), (" 2 % ", 0.02, True)],
)
def test_targets_parse(text: str, target: float, relative: bool) -> None:
    spec = parse_target(text)
    assert spec.target == pytest.approx(target) and spec.relative is relative


@pytest.mark.parametrize("text", ["0", "150%", "abc", "0%", "-1", "nan", "100%"])
def test_bad_targets_are_refused(text: str) -> None:
    with pytest.raises(SpecError, match="estimate target"):
        parse_target(text)
