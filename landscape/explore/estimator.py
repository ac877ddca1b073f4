"""The control-variate estimate of a point's mean loss (or accuracy) from a prefix of the
split's shared permutation, its standard error, and the running sums that continue it.

The centre θ's per-sample values ``u_i`` are known for the whole split, so its mean ``U`` is
exact. At a point p with values ``v_i`` over the first ``n`` of ``N`` samples, ``d_i = v_i − u_i``:

- ``difference``: ``U + mean(d)``, variance ``s²_d / n · (1 − n/N)``;
- ``fitted`` (the regression estimator, Cochran 1977, *Sampling Techniques*, §7.1):
  ``mean(v) − β (mean(u) − U)`` with ``β = cov(v, u) / var(u)`` from the prefix, variance
  ``s²_r / n · (1 − n/N)``, ``s²_r = (n − 1)/(n − 2) · (s²_d − cov(d, u)² / var(u))``.

``(1 − n/N)`` is the finite-population correction: sampling without replacement, so at
``n = N`` both are the full-pass mean (to float64 rounding) with zero error. Everything is
computed from seven running float64 sums per point, which new samples add to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from landscape.explore.spec import Method

# one row per point: n, then Σd, Σd², Σd·u for the loss, then the same for the correct flags
N_SUMS = 7
COLUMNS = ("n", "loss_d", "loss_dd", "loss_du", "acc_d", "acc_dd", "acc_du")
_OFFSET = {"loss": 1, "acc": 4}


@dataclass(frozen=True)
class Centre:
    """θ's per-sample values over the whole split, in permutation order, and their prefix
    sums (``prefix[n]`` sums the first ``n``)."""

    loss: np.ndarray  # (N,) float64
    correct: np.ndarray  # (N,) float64, 0 or 1

    @property
    def size(self) -> int:
        return len(self.loss)

    def values(self, metric: str) -> np.ndarray:
        return self.loss if metric == "loss" else self.correct

    def prefix(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """``(Σu, Σu²)`` over each prefix length 0..N."""
        u = self.values(metric)
        zero = np.zeros(1)
        return np.concatenate([zero, np.cumsum(u)]), np.concatenate([zero, np.cumsum(u * u)])

    def mean(self, metric: str) -> float:
        return float(self.prefix(metric)[0][-1] / self.size)


def point_sums(v_loss: np.ndarray, v_correct: np.ndarray, centre: Centre, start: int) -> np.ndarray:
    """The sums row of values ``v`` (shape ``(..., m)``) over samples ``start..start+m`` of the
    permutation: the float64 reference the engine's on-device sums are checked against."""
    m = v_loss.shape[-1]
    out = np.zeros((*v_loss.shape[:-1], N_SUMS))
    out[..., 0] = m
    for metric, v in (("loss", v_loss), ("acc", v_correct)):
        u = centre.values(metric)[start : start + m]
        d = np.asarray(v, dtype=np.float64) - u
        k = _OFFSET[metric]
        out[..., k], out[..., k + 1], out[..., k + 2] = d.sum(-1), (d * d).sum(-1), (d * u).sum(-1)
    return out


def estimate(
    sums: np.ndarray, centre: Centre, metric: str, method: Method
) -> tuple[np.ndarray, np.ndarray]:
    """``(estimate, standard error)`` of each row of ``sums`` (shape ``(P, N_SUMS)``); NaN where
    a row has fewer than 3 samples."""
    n = sums[:, 0]
    k = _OFFSET[metric]
    sd, sdd, sdu = sums[:, k], sums[:, k + 1], sums[:, k + 2]
    big_n = centre.size
    su_all, suu_all = centre.prefix(metric)
    whole = su_all[-1] / big_n
    idx = n.astype(np.int64)
    su, suu = su_all[idx], suu_all[idx]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_d, mean_u = sd / n, su / n
        var_d = np.maximum(sdd - n * mean_d**2, 0.0) / (n - 1)
        var_u = np.maximum(suu - n * mean_u**2, 0.0) / (n - 1)
        cov_du = (sdu - n * mean_d * mean_u) / (n - 1)
        if method == "fitted":
            usable = var_u > 0
            slope = np.where(usable, cov_du / np.where(usable, var_u, 1.0), 0.0)  # β − 1
            value = whole + mean_d - slope * (mean_u - whole)
            resid = np.maximum(var_d - slope * cov_du, 0.0) * (n - 1) / np.maximum(n - 2, 1)
        else:
            value = whole + mean_d
            resid = var_d
        if metric == "acc":
            # No flips seen in n samples still allows a flip rate of about 3/n (the rule of
            # three): a floor, so an accuracy interval is never zero before n = N.
            resid = np.maximum(resid, 3.0 / n)
        fpc = np.clip(1.0 - n / big_n, 0.0, 1.0)
        se = np.sqrt(resid / n * fpc)
    exact = n >= big_n
    # at n = N the prefix mean of u is U itself: the full-pass mean of v, with no error
    value = np.where(exact, whole + mean_d, value)
    se = np.where(exact, 0.0, se)
    few = n < 3
    return np.where(few, np.nan, value), np.where(few, np.nan, se)


def simultaneous_z(n_looks: int, level: float) -> float:
    """The normal quantile for intervals that hold at every one of ``n_looks`` looks at once
    (Bonferroni): ``Φ⁻¹(1 − (1 − level) / (2 · n_looks))``. A point may stop at any look, by
    any rule, and its stated interval keeps at least ``level`` coverage."""
    return float(norm.ppf(1.0 - (1.0 - level) / (2.0 * max(1, n_looks))))
