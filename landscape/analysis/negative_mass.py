"""How much of the Hessian's eigenvalue density lies below zero, with bounds the method can keep.

Counting Gauss-quadrature nodes below 0 is not a measurement: on a Hessian with a cluster of
exact zeros (dead units, unused inputs, symmetries) one Ritz node sits next to 0 carrying the
cluster's whole weight, and its sign, which more Lanczos steps flip back and forth, decides
the count. Two things make the figure honest:

- ``ε``, the resolution of the products: ``RESOLUTION`` times the spectrum's scale (the largest
  ``|θ|``). Float32 Hessian-vector products carry ~1e-6 relative noise, so an eigenvalue
  within ``1e-5·‖H‖`` of 0 cannot be told from 0; mass is counted below ``−ε``.
- A Gauss–Radau rule with a node fixed at ``t = −ε`` (Golub & Meurant, *Matrices, Moments and
  Quadrature*, §6.2): of all measures with the probe's first ``2m`` moments it is the
  canonical one through ``t``, so by the Chebyshev–Markov–Stieltjes inequalities (Krein &
  Nudelman, *The Markov Moment Problem*, Ch. III) the probe's mass below ``t`` lies between the
  weight of the nodes below ``t`` and that plus the weight of the node at ``t``. That node's
  weight is the mass the moments cannot place on either side of ``−ε``: the zero cluster,
  when the steps cannot yet separate it from ``−ε``.

The reported fraction is the lower bound (mass certainly below ``−ε``), with the upper bound
and the spread over probes: each probe is one unbiased draw of the spectral measure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

RESOLUTION = 1e-5  # relative: eigenvalues within this of 0 (× the scale) count as 0


@dataclass(frozen=True)
class NegativeMass:
    """The share of eigenvalues below ``−epsilon``, averaged over probes."""

    fraction: float  # mean over probes of the mass certainly below −ε (moment lower bound)
    upper: float  # mean of the most mass below −ε any measure with those moments has
    stderr: float | None  # standard error of ``fraction`` over probes; None for one probe
    epsilon: float
    probes: int

    @property
    def interval(self) -> tuple[float, float]:
        """``[fraction − 2·stderr, upper + 2·stderr]`` clipped to [0, 1]: the moment bounds
        widened by the probes' sampling spread (just the bounds for a single probe)."""
        spread = 2 * self.stderr if self.stderr is not None else 0.0
        return max(0.0, self.fraction - spread), min(1.0, self.upper + spread)

    def to_dict(self) -> dict[str, Any]:
        """The JSON fields a density summary carries (``negative_*``)."""
        return {
            "negative_fraction": self.fraction,
            "negative_fraction_max": self.upper,
            "negative_stderr": self.stderr,
            "negative_interval": list(self.interval),
            "negative_epsilon": self.epsilon,
        }


def epsilon(nodes: np.ndarray) -> float:
    """``RESOLUTION`` times the largest ``|θ|`` among the (NaN-padded) nodes."""
    finite = np.abs(nodes[np.isfinite(nodes)])
    return float(RESOLUTION * finite.max()) if finite.size else 0.0


def radau_split(alpha: np.ndarray, beta: np.ndarray, last: float, t: float) -> tuple[float, float]:
    """``(below, at)`` for one probe: the Gauss–Radau weights of the nodes below ``t`` and of
    the node fixed at ``t``, from the Lanczos ``T_m`` (``alpha``, ``beta``) and ``last`` =
    ``β_m``. An exhausted Krylov space (``last == 0``) makes the Gauss rule the probe's exact
    measure: nothing is left undetermined at ``t``."""
    m = len(alpha)
    tri = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)
    if last == 0.0:
        nodes, vectors = np.linalg.eigh(tri)
        weights = vectors[0] ** 2
        return float(weights[nodes < t].sum()), 0.0
    end = np.zeros(m)
    end[-1] = 1.0
    try:
        delta = np.linalg.solve(tri - t * np.eye(m), end)
    except np.linalg.LinAlgError:  # t is a Ritz value: the Gauss rule already has a node there
        nodes, vectors = np.linalg.eigh(tri)
        weights = vectors[0] ** 2
        return float(weights[nodes < t].sum()), float(weights[nodes == t].sum())
    radau = np.zeros((m + 1, m + 1))
    radau[:m, :m] = tri
    radau[m, m - 1] = radau[m - 1, m] = last
    radau[m, m] = t + last**2 * delta[-1]  # makes t an eigenvalue of the extended matrix
    nodes, vectors = np.linalg.eigh(radau)
    weights = vectors[0] ** 2
    fixed = int(np.argmin(np.abs(nodes - t)))
    below = nodes < t
    below[fixed] = False
    return float(weights[below].sum()), float(weights[fixed])


def summarize(splits: np.ndarray, eps: float) -> NegativeMass:
    """The probes' ``(below, at)`` rows (``radau_split``) as one ``NegativeMass``."""
    below, at = splits[:, 0], splits[:, 1]
    stderr = float(below.std(ddof=1) / np.sqrt(len(below))) if len(below) > 1 else None
    return NegativeMass(
        fraction=float(below.mean()),
        upper=float((below + at).mean()),
        stderr=stderr,
        epsilon=eps,
        probes=len(below),
    )
