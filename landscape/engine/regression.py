"""The exact generic path for regression heads: MSE and R² per grid point.

The engine's losses are classification losses, so a module with floating-point targets is
evaluated here, one grid point at a time through ``functional_call``, sums in float64. Its
``{split}_acc`` holds R² (``model_source.REGRESSION_LOSS`` says so in the file). It computes
in the resolved precision under the engine's precision policy (``landscape.engine.precision``),
as the classification engine does, and records it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from landscape.engine.devices import resolve_device
from landscape.engine.plan import resolve_precision
from landscape.engine.precision import DTYPE_LABEL, compute_in
from landscape.specs import EngineOptions

Data = Mapping[str, tuple[Tensor, Tensor]]
Results = dict[str, np.ndarray]


class RegressionEvaluator:
    """The exact generic path: for each grid point, ``θ + Σ c_k d_k`` through
    ``functional_call`` over batches of each split; sums in float64. One process."""

    def __init__(
        self, model: nn.Module, directions: list[Mapping[str, Tensor]], data: Data,
        *, options: EngineOptions,
    ) -> None:  # fmt: skip
        start = time.perf_counter()
        self.device = resolve_device(options.device)
        self.precision = resolve_precision(options, self.device)  # refuses tf32/bf16 on CPU
        self.module = copy.deepcopy(model).to(self.device).eval()
        self.params = {
            n: p.detach().to(self.device, torch.float32) for n, p in self.module.named_parameters()
        }
        self.buffers = {n: b.detach() for n, b in self.module.named_buffers()}
        self.dirs = [
            {n: d[n].to(self.device, torch.float32) for n in self.params} for d in directions
        ]
        self.batch_size = options.batch_size or 256
        self.splits: dict[str, tuple[list[tuple[Tensor, Tensor]], int, float]] = {}
        for split, (x, y) in data.items():
            y2 = y.reshape(len(y), -1).double()
            sst = float(((y2 - y2.mean(dim=0)) ** 2).sum())
            batches = [
                (
                    x[i : i + self.batch_size].to(self.device, torch.float32),
                    y2[i : i + self.batch_size].to(self.device),
                )
                for i in range(0, len(x), self.batch_size)
            ]
            self.splits[split] = (batches, y2.numel(), sst)
        self.prepare_s = time.perf_counter() - start
        self.eval_s = 0.0
        self.points_done = 0
        self.host_syncs = 0  # device → host transfers of results: one per grid point

    def imap(self, chunks: Iterable[np.ndarray]) -> Iterator[tuple[int, Results]]:
        for index, chunk in enumerate(chunks):
            yield index, self.evaluate(chunk)

    def evaluate(self, coords: np.ndarray) -> Results:
        """``{split}_loss`` (MSE) and ``{split}_acc`` (R²) at each row of ``coords``."""
        start = time.perf_counter()
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, len(self.dirs))
        out = {f"{s}_{m}": np.empty(len(coords)) for s in self.splits for m in ("loss", "acc")}
        with compute_in(self.precision, self.device), torch.inference_mode():
            for i, point in enumerate(coords):
                weights = {}
                for n, p in self.params.items():
                    value = p.clone()
                    for c, d in zip(point, self.dirs, strict=True):
                        value.add_(d[n], alpha=float(c))
                    weights[n] = value
                sses = []
                for batches, _, _ in self.splits.values():
                    sse = torch.zeros((), dtype=torch.float64, device=self.device)
                    for xb, yb in batches:
                        pred = functional_call(self.module, {**weights, **self.buffers}, (xb,))
                        sse += (pred.reshape(len(xb), -1).double() - yb).pow(2).sum()
                    sses.append(sse)
                totals = torch.stack(sses).cpu().tolist()  # every split's sum in one transfer
                self.host_syncs += 1
                for (split, (_, n_values, sst)), total in zip(
                    self.splits.items(), totals, strict=True
                ):
                    out[f"{split}_loss"][i] = total / n_values
                    out[f"{split}_acc"][i] = _r2(total, sst)
        self.eval_s += time.perf_counter() - start
        self.points_done += len(coords)
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "device": str(self.device),
            "precision": self.precision,
            "dtype": DTYPE_LABEL[self.precision],
            "method": "generic per-point (regression)",
            "compiled": False,
            "compile_reason": "regression path: eager, one point at a time",
            "bn_folded": 0,
            "points_per_call": 1,
            "batch_size": self.batch_size,
            "oom_retries": 0,
            "host_syncs": self.host_syncs,
            "workers": 1,
            "timings": {
                "prepare_s": self.prepare_s,
                "eval_s": self.eval_s,
                "points": self.points_done,
            },
        }

    def close(self) -> None:
        """Nothing to release: one process, no workers."""

    def __enter__(self) -> RegressionEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _r2(sse: float, sst: float) -> float:
    """Coefficient of determination; constant targets score 1 when fitted exactly, else 0."""
    if sst > 0:
        return 1.0 - sse / sst
    return 1.0 if sse == 0 else 0.0
