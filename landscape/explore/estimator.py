"""The stratified control-variate estimate of a point's mean loss (or accuracy) from a prefix
of the split's shared permutation, its standard error, and the running sums that continue it.

Strata are the class labels split into input-norm quartiles (``strata_of``): far from the
centre a perturbed net predicts nearly the same for every input, so much of a point's
per-sample variance lies between classes, and its largest losses come from the inputs of
largest norm (a ReLU net's activations scale with its input). The permutation
(``permutation.split_permutation``) gives every prefix each stratum in proportion, so no
prefix misses the heavy samples that every nearby point shares. The centre θ's per-sample
values ``u_i`` are known for the whole split, so each stratum's mean ``U_h`` and weight
``W_h = N_h / N`` are exact. At a point p with values ``v_i`` over the first ``n`` of ``N``
samples (``n_h`` of stratum h), ``d_i = v_i − u_i``:

- ``fitted`` (the combined regression estimator, Cochran 1977, *Sampling Techniques*,
  §7.10): ``Σ_h W_h [U_h + mean_h(d) − b (mean_h(u) − U_h)]`` with one slope ``b`` (of d on
  u, ``β − 1``) pooled within strata;
- ``difference``: the same with ``b = 0``.

Variance ``s² · Σ_h W_h² (1/n_h − 1/N_h)``, ``s²`` the residual variance pooled within strata
(``n − H − 1`` degrees of freedom). ``1/n_h − 1/N_h`` is the finite-population correction:
sampling without replacement, so at ``n = N`` the estimate is the full-pass mean (to float64
rounding) with zero error. Everything comes from running float64 sums per point and stratum,
which new samples add to.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import norm

from landscape.explore.spec import Method

MAX_STRATA = 100  # more classes are grouped into this many contiguous label ranges
NORM_QUANTILES = 4  # input-norm strata per class (fewer where classes × 4 > MAX_STRATA)
METRICS = ("loss", "acc")
STATS = ("d", "dd", "du")  # per stratum: Σd, Σd², Σd·u
LEAD = ("n", "looks")  # the leading columns of a sums row


def n_sums(n_strata: int) -> int:
    """Columns of a sums row: ``n``, the looks taken, then per metric and statistic one
    column per stratum."""
    return len(LEAD) + len(METRICS) * len(STATS) * n_strata


def columns(metric: str, stat: str, n_strata: int) -> slice:
    """The sums row's columns of ``stat`` of ``metric``, one per stratum."""
    k = METRICS.index(metric) * len(STATS) + STATS.index(stat)
    start = len(LEAD) + k * n_strata
    return slice(start, start + n_strata)


def strata_of(
    labels: np.ndarray, norms: np.ndarray | None = None, max_strata: int = MAX_STRATA
) -> np.ndarray:
    """Each sample's stratum: its class label, and within the class its input norm's quantile
    (``NORM_QUANTILES`` of them, as many as ``max_strata`` allows; ties broken by index, so
    the strata do not depend on the order the samples come in). With more than
    ``max_strata`` classes: the label's range (``label · max_strata // classes``)."""
    labels = np.asarray(labels, dtype=np.int64)
    classes = int(labels.max()) + 1 if labels.size else 1
    if classes > max_strata:
        grouped: np.ndarray = labels * max_strata // classes
        return grouped
    per_class = min(NORM_QUANTILES, max_strata // classes) if norms is not None else 1
    if per_class <= 1 or norms is None:
        return labels
    order = np.lexsort((np.arange(len(labels)), np.asarray(norms, np.float64), labels))
    counts = np.bincount(labels, minlength=classes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.empty(len(labels), dtype=np.int64)
    position[order] = np.arange(len(labels)) - starts[labels[order]]
    out: np.ndarray = labels * per_class + position * per_class // counts[labels]
    return out


@dataclass(frozen=True)
class Centre:
    """θ's per-sample values over the whole split and each sample's stratum, all in
    permutation order."""

    loss: np.ndarray  # (N,) float64
    correct: np.ndarray  # (N,) float64, 0 or 1
    stratum: np.ndarray  # (N,) int64
    _cache: dict[tuple[str, int], tuple[np.ndarray, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def size(self) -> int:
        return len(self.loss)

    @property
    def n_strata(self) -> int:
        return int(self.stratum.max()) + 1 if self.stratum.size else 1

    def values(self, metric: str) -> np.ndarray:
        return self.loss if metric == "loss" else self.correct

    def mean(self, metric: str) -> float:
        return float(self.values(metric).mean())

    def prefix(self, metric: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per stratum over the first ``n`` samples: count, ``Σu``, ``Σu²`` (cached: the
        points of a surface stand at a few prefix lengths)."""
        key = (metric, int(n))
        if key not in self._cache:
            h, u, k = self.stratum[:n], self.values(metric)[:n], self.n_strata
            self._cache[key] = (
                np.bincount(h, minlength=k).astype(np.float64),
                np.bincount(h, u, minlength=k),
                np.bincount(h, u * u, minlength=k),
            )
        count, su, suu = self._cache[key]
        return count, su, suu


def point_sums(v_loss: np.ndarray, v_correct: np.ndarray, centre: Centre, start: int) -> np.ndarray:
    """The sums row of values ``v`` (shape ``(..., m)``) over samples ``start..start+m`` of the
    permutation, as one look: the float64 reference the engine's on-device sums are checked
    against."""
    m, k = v_loss.shape[-1], centre.n_strata
    out = np.zeros((*v_loss.shape[:-1], n_sums(k)))
    out[..., 0], out[..., 1] = m, 1
    onehot = np.eye(k)[centre.stratum[start : start + m]]  # (m, H)
    for metric, v in (("loss", v_loss), ("acc", v_correct)):
        u = centre.values(metric)[start : start + m]
        d = np.asarray(v, dtype=np.float64) - u
        for stat, x in (("d", d), ("dd", d * d), ("du", d * u)):
            out[..., columns(metric, stat, k)] = x @ onehot
    return out


def estimate(
    sums: np.ndarray, centre: Centre, metric: str, method: Method
) -> tuple[np.ndarray, np.ndarray]:
    """``(estimate, standard error)`` of each row of ``sums`` (shape ``(P, n_sums)``); NaN
    where a row has fewer than 3 samples."""
    n = sums[:, 0]
    if n.size == 0:
        return np.zeros(0), np.zeros(0)
    k = centre.n_strata
    sd, sdd, sdu = (sums[:, columns(metric, s, k)] for s in STATS)
    count, su, suu = _prefix_rows(centre, metric, n)
    size, total_u, _ = centre.prefix(metric, centre.size)
    weight = size / centre.size
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_u_h = np.where(size > 0, total_u / np.where(size > 0, size, 1.0), 0.0)
        seen = count > 0
        c = np.where(seen, count, 1.0)
        md, mu = sd / c, su / c
        cdd = np.maximum(sdd - c * md * md, 0.0)
        cuu = np.maximum(suu - c * mu * mu, 0.0)
        cdu = sdu - c * md * mu
        fitted = method == "fitted"
        spread_u = cuu.sum(1)
        slope = (
            np.where(spread_u > 0, cdu.sum(1) / np.where(spread_u > 0, spread_u, 1.0), 0.0)
            if fitted
            else np.zeros(len(n))
        )
        b = slope[:, None]
        resid = np.maximum(cdd - 2 * b * cdu + b * b * cuu, 0.0).sum(1)
        dof = np.maximum(n - seen.sum(1) - int(fitted), 1.0)
        s2 = resid / dof
        if metric == "acc":
            # No flips seen in n samples still allows a flip rate of about 3/n (the rule of
            # three): a floor, so an accuracy interval is never zero before n = N.
            s2 = np.maximum(s2, 3.0 / n)
        mean_d = sd.sum(1) / n
        # a stratum not read yet (weight below 1/n) takes the pooled mean difference, and
        # its share of the variance that of a single sample plus the spread between strata
        between = (weight * seen * (md - mean_d[:, None]) ** 2).sum(1)
        per_h = np.where(seen, md - b * (mu - mean_u_h), mean_d[:, None])
        value = (weight * (mean_u_h + per_h)).sum(1)
        fpc = np.where(seen, 1.0 / c - 1.0 / np.where(size > 0, size, 1.0), 1.0)
        share = np.where(seen, s2[:, None], (s2 + between)[:, None])
        se = np.sqrt(np.maximum((weight * weight * fpc * share).sum(1), 0.0))
    exact = n >= centre.size
    # at n = N every stratum is read whole: the full-pass mean of v, with no error
    value = np.where(exact, centre.mean(metric) + mean_d, value)
    se = np.where(exact, 0.0, se)
    few = n < 3
    return np.where(few, np.nan, value), np.where(few, np.nan, se)


def _prefix_rows(
    centre: Centre, metric: str, n: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``centre.prefix`` at each row's ``n``, stacked ``(P, H)``."""
    lengths, index = np.unique(n.astype(np.int64), return_inverse=True)
    rows = [centre.prefix(metric, int(m)) for m in lengths]
    count, su, suu = (np.stack([r[j] for r in rows])[index] for j in range(3))
    return count, su, suu


def simultaneous_z(n_looks: int, level: float) -> float:
    """The normal quantile for intervals that hold at every one of ``n_looks`` looks at once
    (Bonferroni): ``Φ⁻¹(1 − (1 − level) / (2 · n_looks))``. A point may stop at any look, by
    any rule, and its stated interval keeps at least ``level`` coverage."""
    return float(norm.ppf(1.0 - (1.0 - level) / (2.0 * max(1, n_looks))))
