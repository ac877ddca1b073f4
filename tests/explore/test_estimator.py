"""The stratified control-variate estimator and its stopping rule against direct computations
on synthetic populations."""

from __future__ import annotations

import numpy as np
import pytest

from landscape.errors import SpecError
from landscape.explore import EstimateSpec, parse_target
from landscape.explore.estimator import Centre, estimate, point_sums, simultaneous_z, strata_of
from landscape.explore.permutation import ladder, round_up, split_permutation
from landscape.explore.stopping import (
    GROWTH,
    MAX_LOOKS,
    REST,
    STRADDLES,
    UNRESOLVED,
    at_target,
    next_sizes,
    priorities,
)


def _population(n: int, seed: int = 0, classes: int = 10) -> tuple[Centre, np.ndarray, np.ndarray]:
    """A split in permutation order: centre values ``u``, a point's values ``v`` that depend on
    the class (as a perturbed net's do far from the centre), correct flags."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    u = rng.gamma(2.0, 0.3, n)
    v = 1.5 * u + rng.normal(0.0, 0.2, n) ** 2 + 0.4 * labels
    cu = (rng.random(n) < 0.8).astype(float)
    cv = np.where(rng.random(n) < 0.1 + 0.02 * labels, 1 - cu, cu)
    order = split_permutation(labels, seed, "train")
    centre = Centre(loss=u[order], correct=cu[order], stratum=labels[order])
    return centre, v[order], cv[order]


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
    np.testing.assert_allclose(parts[:, 2:], whole[:, 2:], rtol=1e-12)
    assert parts[0, 0] == whole[0, 0] == 1024 and parts[0, 1] == 2  # n, looks


def _combined_regression(v: np.ndarray, centre: Centre, n: int, slope: bool) -> tuple[float, float]:
    """Cochran's combined regression estimator over strata, written out directly."""
    u, h, big_n = centre.loss, centre.stratum, centre.size
    strata = np.unique(h)
    d = v - u
    within = [(d[:n][h[:n] == s], u[:n][h[:n] == s]) for s in strata]
    b = 0.0
    if slope:
        num = sum(((dd - dd.mean()) * (uu - uu.mean())).sum() for dd, uu in within)
        b = num / sum(((uu - uu.mean()) ** 2).sum() for _, uu in within)
    value, var_factor, resid = 0.0, 0.0, 0.0
    for s, (dd, uu) in zip(strata, within, strict=True):
        weight, big_u = np.mean(h == s), u[h == s].mean()
        value += weight * (big_u + dd.mean() - b * (uu.mean() - big_u))
        var_factor += weight**2 * (1 / len(dd) - 1 / (h == s).sum())
        r = (dd - dd.mean()) - b * (uu - uu.mean())
        resid += (r * r).sum()
    s2 = resid / (n - len(strata) - int(slope))
    del big_n
    return value, float(np.sqrt(s2 * var_factor))


def test_fitted_is_the_combined_regression_estimator_and_difference_the_plain_one() -> None:
    centre, v, cv = _population(5000, seed=3)
    n = 400
    sums = point_sums(v[None, :n], cv[None, :n], centre, 0)
    for method, slope in (("fitted", True), ("difference", False)):
        want_value, want_se = _combined_regression(v, centre, n, slope)
        value, se = estimate(sums, centre, "loss", method)  # type: ignore[arg-type]
        assert value[0] == pytest.approx(want_value, rel=1e-10)
        assert se[0] == pytest.approx(want_se, rel=1e-8)


def test_strata_take_the_variance_between_classes_out_of_the_error() -> None:
    """One stratum is the unstratified estimator; the class labels as strata shrink its
    standard error where the values depend on the class."""
    centre, v, cv = _population(20000, seed=5)
    one = Centre(loss=centre.loss, correct=centre.correct, stratum=np.zeros(centre.size, int))
    n = 512
    _, se_strata = estimate(
        point_sums(v[None, :n], cv[None, :n], centre, 0), centre, "loss", "fitted"
    )
    _, se_one = estimate(point_sums(v[None, :n], cv[None, :n], one, 0), one, "loss", "fitted")
    assert se_strata[0] < 0.6 * se_one[0]


def test_an_accuracy_with_no_flips_seen_keeps_an_error() -> None:
    centre, _, _ = _population(2000)
    sums = point_sums(centre.loss[None, :256], centre.correct[None, :256], centre, 0)
    _, se = estimate(sums, centre, "acc", "fitted")
    assert se[0] > 0


def test_stopped_intervals_cover_after_optional_stopping() -> None:
    """Points take the planned looks until z·SE meets a 2 % target; the stated intervals
    (simultaneous z over the looks) cover ≥ 95 % of the true means, where 1.96 at the
    stopping look does not keep its promise as well."""
    rng = np.random.default_rng(7)
    big_n = 20000
    sizes = ladder(big_n, 256)
    z = simultaneous_z(MAX_LOOKS, 0.95)
    spec = EstimateSpec(target=0.02)
    labels = rng.integers(0, 10, big_n)
    u = rng.gamma(1.5, 0.4, big_n)
    covered, naive = [], []
    for _ in range(300):
        scale = rng.uniform(0.2, 3.0)
        v = u * (1 + 0.5 * scale) + rng.exponential(scale, big_n) + scale * 0.1 * labels
        order = split_permutation(labels, int(rng.integers(1 << 30)), "train")
        c = Centre(loss=u[order], correct=np.ones(big_n), stratum=labels[order])
        n, looks = np.zeros(1), np.zeros(1)
        value, se = np.full(1, np.nan), np.full(1, np.nan)
        while True:
            n = next_sizes(n, looks, value, se, z, spec, sizes).astype(float)
            looks += 1
            sums = point_sums(v[order][None, : int(n[0])], np.ones((1, int(n[0]))), c, 0)
            value, se = estimate(sums, c, "loss", "fitted")
            if n[0] >= big_n or at_target(value, se, z, spec)[0]:
                break
        assert looks[0] <= MAX_LOOKS + 1
        covered.append(abs(value[0] - v.mean()) <= z * se[0] + 1e-12)
        naive.append(abs(value[0] - v.mean()) <= 1.96 * se[0] + 1e-12)
    assert np.mean(covered) >= 0.95
    assert np.mean(covered) > np.mean(naive)


def test_simultaneous_z_is_bonferroni() -> None:
    assert simultaneous_z(1, 0.95) == pytest.approx(1.959964, abs=1e-5)
    assert simultaneous_z(4, 0.95) == pytest.approx(2.497705, abs=1e-5)


def test_the_ladder_rounds_looks_up_and_ends_at_the_split() -> None:
    sizes = ladder(1000, 256)
    assert list(sizes) == [256, 305, 363, 431, 512, 609, 725, 862, 1000]
    assert list(round_up(np.array([1.0, 256, 257, 999.5, 5000]), sizes)) == [
        256, 256, 305, 1000, 1000,
    ]  # fmt: skip


def test_looks_are_planned_from_the_error_so_far() -> None:
    sizes = ladder(50_000, 256)
    spec, z = EstimateSpec(target=0.05), 2.5
    n = np.array([0.0, 256, 256, 256, 1024])
    looks = np.array([0.0, 1, 1, 1, MAX_LOOKS])
    value = np.array([np.nan, 1.0, 1.0, 1.0, 1.0])
    # per-sample variances 1, 0.01 (nearly at target: the next look grows by GROWTH only)
    se = np.sqrt(np.array([np.nan, 1.0, 0.01, 4.0, 1.0]) / n.clip(1) * (1 - n / 50_000))
    got = next_sizes(n, looks, value, se, z, spec, sizes)
    need = 1 / (0.05**2 / (z**2 * 1.0) + 1 / 50_000)  # about 2,470 for unit variance
    assert got[0] == 256  # the first stage
    assert got[1] == round_up(np.array([need]), sizes)[0] and got[1] >= need
    assert got[2] == round_up(np.array([GROWTH * 256]), sizes)[0]
    assert got[3] > got[1]
    assert got[4] == 50_000  # out of looks: read whole


def test_the_permutation_is_seeded_and_every_prefix_holds_each_class_in_proportion() -> None:
    labels = np.repeat(np.arange(4), [100, 300, 250, 350])
    a, b = split_permutation(labels, 1, "train"), split_permutation(labels, 1, "train")
    assert (a == b).all() and sorted(a) == list(range(1000))
    assert not (a == split_permutation(labels, 1, "test")).all()
    assert not (a == split_permutation(labels, 2, "train")).all()
    weights = np.bincount(labels) / len(labels)
    counts = np.cumsum(np.eye(4)[labels[a]], axis=0)  # class counts of every prefix
    prefix = np.arange(1, 1001)[:, None]
    assert np.abs(counts - prefix * weights).max() <= 2.0
    assert strata_of(np.array([0, 5, 250, 499]), max_strata=100).tolist() == [0, 1, 50, 99]


def test_strata_are_class_and_input_norm_quartile_whatever_the_order() -> None:
    rng = np.random.default_rng(2)
    labels, norms = rng.integers(0, 3, 400), rng.gamma(2.0, 1.0, 400)
    strata = strata_of(labels, norms)
    assert (strata // 4 == labels).all()  # four quartiles per class
    for c in range(3):
        mine = labels == c
        for q in range(3):  # each quartile's norms lie below the next one's
            assert (
                norms[mine & (strata == 4 * c + q)].max()
                <= norms[mine & (strata == 4 * c + q + 1)].min()
            )
        assert np.ptp(np.bincount(strata[mine] - 4 * c)) <= 1  # quartiles of equal size
    order = rng.permutation(400)
    assert (strata_of(labels[order], norms[order]) == strata[order]).all()
    assert (strata_of(labels, np.zeros(400)) // 4 == labels).all()  # ties: by index
    assert strata_of(rng.integers(0, 40, 400), norms).max() < 80  # 40 classes: two per class


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
