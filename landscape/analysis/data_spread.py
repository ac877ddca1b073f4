"""The spread of the curvature numbers over data: the same analysis on disjoint subsets.

A Hessian computed on a subset of the split is the Hessian of *that subset's* mean loss: λ_max
of 128 samples can vary tenfold from one subset to the next (PyHessian's users report 159 to
1587), and nothing in one run shows it. So the extreme eigenvalues and the trace are computed
again on ``count`` disjoint subsets of the analysed size, consecutive blocks of the split's
fixed seeded permutation (``landscape.data.subset_blocks``; the first block is the analysed
subset itself), with the same settings and seed: what varies between them is the data alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor, nn

from landscape.analysis.hessian import hessian_spectrum
from landscape.errors import SpecError

QUANTITIES = ("lambda_max", "lambda_min", "trace")


@dataclass(frozen=True)
class DataSpread:
    """Per subset (block order), the quantities asked for; NaN-free, one value per subset."""

    size: int  # samples in each subset
    values: dict[str, np.ndarray]  # quantity → (count,) values, only those computed
    matvecs: int

    @property
    def count(self) -> int:
        return len(next(iter(self.values.values())))

    def summary(self) -> dict[str, Any]:
        """JSON-ready: per quantity the values, mean, sample sd, min and max."""
        out: dict[str, Any] = {"size": self.size, "subsets": self.count, "matvecs": self.matvecs}
        for name, values in self.values.items():
            out[name] = {
                "values": values.tolist(),
                "mean": float(values.mean()),
                "sd": float(values.std(ddof=1)),
                "min": float(values.min()),
                "max": float(values.max()),
            }
        return out


def split_blocks(
    data: tuple[Tensor, Tensor], size: int | None, count: int
) -> list[tuple[Tensor, Tensor]]:
    """``count`` disjoint subsets of ``size`` of the whole split ``data``."""
    from landscape.data import subset_blocks

    x, y = data
    if size is None or size >= len(y):
        raise SpecError(
            f"a spread over data needs a subset smaller than the split ({len(y)} samples): "
            "set the subset size (--samples N)"
        )
    return [(x[keep], y[keep]) for keep in subset_blocks(len(y), size, count)]


def data_spread(
    model: nn.Module,
    blocks: list[tuple[Tensor, Tensor]],
    *,
    top: bool,
    bottom: bool,
    trace_samples: int,
    on_block: Callable[[int], None] | None = None,
    **settings: Any,
) -> DataSpread:
    """λ_max (with ``top``), λ_min (with ``bottom``) and the trace (``trace_samples`` > 0) on
    each block; ``settings`` are ``hessian_spectrum``'s (steps, options, device, …), equal
    for every block. ``on_block(k)`` after each."""
    values: dict[str, list[float]] = {}
    matvecs = 0
    for k, block in enumerate(blocks):
        result = hessian_spectrum(
            model, block, top=int(top), bottom=int(bottom), trace_samples=trace_samples,
            **settings,
        )  # fmt: skip
        matvecs += result.matvecs
        found = {"lambda_max": result.top, "lambda_min": result.bottom}
        for name, array in found.items():
            if len(array):
                values.setdefault(name, []).append(float(array[0]))
        if result.trace is not None:
            values.setdefault("trace", []).append(result.trace)
        if on_block is not None:
            on_block(k + 1)
    return DataSpread(
        size=len(blocks[0][1]),
        values={name: np.asarray(v, dtype=np.float64) for name, v in values.items()},
        matvecs=matvecs,
    )


def spread_arrays(spread: DataSpread) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The ``hessian/`` group's ``spread_*`` datasets and attrs."""
    arrays = {f"spread_{name}": values for name, values in spread.values.items()}
    return arrays, {"spread_size": spread.size, "spread_matvecs": spread.matvecs}


def spread_from_group(
    arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any]
) -> DataSpread | None:
    """The stored spread, or None where the group has none."""
    values = {n: np.asarray(arrays[f"spread_{n}"]) for n in QUANTITIES if f"spread_{n}" in arrays}
    if not values:
        return None
    return DataSpread(
        size=int(attrs["spread_size"]), values=values, matvecs=int(attrs["spread_matvecs"])
    )
