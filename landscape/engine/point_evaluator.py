"""The per-process core of the engine: grid points in, loss and accuracy sums out.

``PointEvaluator`` is what ``GridEvaluator`` runs in-process or in each worker process. It
holds the (possibly BN-folded) model, θ and the directions stacked per parameter, and the data
already on the device in equal-sized, padded batches (``landscape.engine.batches``). The
per-batch functions and their compiled forms live in ``landscape.engine.forward``; each call
runs inside the precision policy of ``landscape.engine.precision``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.engine.batches import SplitBatches, halve_batches, split_batches, to_device
from landscape.engine.forward import (
    BatchFn,
    batch_sums,
    batch_sums_k,
    compile_limits,
    compiled,
    head_in_fp32,
    per_sample_loss,
)
from landscape.engine.plan import K_CANDIDATES, choose_points_per_call, compile_after_measuring
from landscape.engine.precision import compute_in
from landscape.engine.shared_graphs import graph_key, has_compiled, share_class
from landscape.losses import Loss
from landscape.specs import CompileMode, ResolvedPrecision

# the names callers have imported from here since before the split into batches/forward
__all__ = ["CoreConfig", "PointEvaluator", "SplitBatches", "per_sample_loss", "split_batches"]

log = logging.getLogger(__name__)


# How far the compiled function may differ from eager at θ before it is rejected: fused
# kernels sum in another order, which moves reduced-precision results the most (relative
# loss, fraction of samples whose predicted class may flip).
_COMPILE_TOLERANCE = {"fp32": (1e-4, 0.0), "tf32": (2e-3, 1e-3), "bf16": (3e-2, 5e-3)}


@dataclass
class CoreConfig:
    """What a ``PointEvaluator`` needs besides tensors (plain values: it crosses processes)."""

    loss: Loss
    device: str
    batch_size: int  # the largest batch of any split; halved on out-of-memory errors
    points_per_call: int  # 0: time candidates on this device and keep the best
    # False: eager. True: time eager points first (CUDA: at θ, the K trial or K as set; CPU:
    # the first call), then compile if the saving over ``compile_share`` points pays.
    # "always": compile up front.
    compile: CompileMode
    channels_last: bool
    precision: ResolvedPrecision = "fp32"
    max_points_per_call: int = 8  # the largest K tried when ``points_per_call`` is 0
    compile_share: int = 0  # the grid points this process expects to evaluate
    k_reason: str = ""
    compile_reason: str = ""
    timings: dict[str, float] = field(default_factory=dict)


class PointEvaluator:
    """Loss/accuracy of ``module`` at ``θ + Σ c_k d_k`` over every split, in one process.

    It holds no reference to itself (no bound methods in attributes): dropping it after
    ``close()`` frees its tensors — on a GPU, their memory — at once, without waiting for the
    cyclic collector.
    """

    def __init__(
        self,
        module: nn.Module,
        params: dict[str, Tensor],
        directions: list[dict[str, Tensor]],
        data: dict[str, SplitBatches],
        config: CoreConfig,
    ) -> None:
        self.config = config
        self.device = torch.device(config.device)
        self.module = module.to(self.device).eval()
        self.data = {split: to_device(b, self.device) for split, b in data.items()}
        fmt = torch.channels_last if config.channels_last else torch.contiguous_format

        def place(t: Tensor) -> Tensor:
            t = t.detach().to(device=self.device, dtype=torch.float32)
            return t.contiguous(memory_format=fmt) if t.dim() == 4 else t.contiguous()

        # parameters no direction moves (biases, BN under ignore=biasbn) are added to nothing
        moving = [n for n in params if any(bool(d[n].any()) for d in directions)]
        self.static = {n: place(params[n]) for n in params if n not in moving}
        self.base = {n: place(params[n]) for n in moving}
        # (ndim, *shape) per moving parameter: a grid point is θ + coefs @ D
        self.stacked = {n: torch.stack([place(d[n]) for d in directions]) for n in moving}
        self.ndim = len(directions)
        firsts = [b.xs[0] for b in self.data.values()]
        # bf16: the logits (accuracy, loss) from a float32 head, not rounded to bf16
        self.fp32_head = (
            head_in_fp32(self.module, firsts[0]) if config.precision == "bf16" else None
        )
        # surfaces of this architecture share their compiled graphs, whatever the weights
        extra = (config.precision, config.loss.name, config.channels_last)
        self._graph_key = graph_key(self.module, {**self.static, **self.base}, firsts, extra)
        self.module = share_class(self.module, self._graph_key)
        self.compile_reused = False  # the architecture's compiled graphs existed already
        self.compiled = False  # whether the compiled functions compute the points now
        self.compile_error: str | None = None
        self.host_syncs = 0  # device → host transfers of results: one per group of K points
        self.oom_retries = 0
        config.timings.setdefault("compile_s", 0.0)
        self.vmap_error: str | None = None  # why a loss that sees the model runs per point
        if config.loss.sees_model and config.points_per_call != 1:
            self._check_vmap()
        trial = config.points_per_call == 0
        # The eager time per point that compiling is weighed against: on CUDA timed at θ after
        # a warm-up (the K trial, or K as set), since the first points' time would include
        # cuDNN's autotuning; on CPU that of the first points evaluated, at no extra cost.
        self._measure_first = config.compile is True and self.device.type == "cpu" and not trial
        with self._computing():
            eager_s = self._choose_k() if trial else math.nan
            if config.compile == "always":
                self._compile()
            elif config.compile is True and not self._measure_first:
                if not trial:
                    eager_s = self._eager_s_per_point()
                self._decide_compile(eager_s, points_done=0)

    # -- computing -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _computing(self) -> Iterator[None]:
        """The precision policy (flags restored on exit), no autograd, the compile budget."""
        with (
            compute_in(self.config.precision, self.device, autotune=True),
            torch.inference_mode(),
            compile_limits(),
        ):
            yield

    def _k(self) -> int:
        return self.config.points_per_call

    def _params_at(self, coefs: np.ndarray) -> dict[str, Tensor]:
        """The moving parameters at ``θ + Σ_j c_j d_j``: for one point (``coefs`` of shape
        ``(1, ndim)``) each as θ's; for K points with a leading K dimension. One point's
        coefficients are Python floats: no transfer to the device."""
        if self._k() == 1:
            out = {}
            for n, base in self.base.items():
                p = base.clone()
                for j in range(self.ndim):
                    p.add_(self.stacked[n][j], alpha=float(coefs[0, j]))
                out[n] = p
            return out
        c = torch.as_tensor(coefs, dtype=torch.float32, device=self.device)
        return {
            n: base.unsqueeze(0) + torch.einsum("kj,j...->k...", c, self.stacked[n])
            for n, base in self.base.items()
        }

    def _head(self, coefs: np.ndarray) -> tuple[BatchFn, tuple[Any, ...]]:
        """The eager per-batch function for the current K and its leading arguments."""
        moving = self._params_at(coefs)
        if self._k() == 1:
            return batch_sums, (self.module, self.config.loss, {**self.static, **moving})
        return batch_sums_k, (self.module, self.config.loss, self.static, moving)

    def _group_values(self, coefs: np.ndarray) -> np.ndarray:
        """Loss sums and correct counts, shape ``(splits, 2, K)``, at the K points of ``coefs``;
        every split's sums are stacked on the device and cross to the host in one transfer."""
        fn, head = self._head(coefs)
        if self.compiled:
            fn = compiled(fn, self._graph_key)
        rows = []
        for batches in self.data.values():
            loss_sum: Tensor | None = None
            correct: Tensor | None = None
            for x, y, mask in zip(batches.xs, batches.ys, batches.masks, strict=True):
                ls, cs = fn(*head, x, y, mask)
                loss_sum = ls if loss_sum is None else loss_sum + ls
                correct = cs if correct is None else correct + cs
            assert loss_sum is not None and correct is not None
            rows.append(torch.stack([loss_sum.reshape(-1), correct.reshape(-1).double()]))
        values: np.ndarray = torch.stack(rows).cpu().numpy()
        self.host_syncs += 1
        return values

    def _values(self, coefs: np.ndarray) -> np.ndarray:
        """``_group_values``; a compiled path that fails at run time (other than out of memory)
        is dropped for eager, recorded, and the group computed again."""
        if not self.compiled:
            return self._group_values(coefs)
        try:
            return self._group_values(coefs)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:
            self.compiled = False
            self.compile_error = f"fell back to eager: {type(exc).__name__}: {exc}"[:500]
            log.warning("compiled evaluation failed, evaluating eagerly: %s", self.compile_error)
        return self._group_values(coefs)

    def _check_vmap(self) -> None:
        """Run a loss that sees the model on two points under ``torch.vmap`` once, at θ; one
        that cannot be vmapped (``.item()``, data-dependent Python) is evaluated one point per
        call instead -- each point then exactly as the naive loop -- and the reason kept."""
        wanted, self.config.points_per_call = self.config.points_per_call, 2
        split = next(iter(self.data.values()))
        try:
            with self._computing():
                fn, head = self._head(np.zeros((2, self.ndim)))
                fn(*head, split.xs[0], split.ys[0], split.masks[0])
        except torch.cuda.OutOfMemoryError:
            pass  # a sizing matter: the K trial or the retries handle it
        except Exception as exc:
            self.vmap_error = f"{type(exc).__name__}: {exc}"[:500]
            wanted = 1
            self.config.k_reason = (
                f"loss {self.config.loss.name!r} fails under torch.vmap: one point per call"
            )
            log.warning("loss %s cannot be vmapped, one point per call: %s",
                        self.config.loss.name, self.vmap_error)  # fmt: skip
        self.config.points_per_call = wanted

    # -- out of memory -----------------------------------------------------------------------
    def _batch_size(self) -> int:
        return max(b.size for b in self.data.values())

    def _check_retry(self, exc: torch.cuda.OutOfMemoryError, *, shrink_k: bool) -> None:
        """Called inside ``except OutOfMemoryError``, at any group of points (memory that
        sufficed for earlier groups can be taken by another process on the device meanwhile):
        raises a clear error when there is nothing left to halve — K (with ``shrink_k``) and
        the batch both 1 — and returns otherwise, for ``_shrink`` and a retry."""
        if (shrink_k and self._k() > 1) or self._batch_size() > 1:
            return
        raise torch.cuda.OutOfMemoryError(
            f"out of memory on {self.device} even at one grid point per call and batch 1, "
            f"after {self.oom_retries} halving(s): free memory on the device (another process "
            f"may hold it) or evaluate a smaller model; the last error: {str(exc)[:300]}"
        ) from exc

    def _shrink(self, *, shrink_k: bool) -> None:
        """Halve K (with ``shrink_k``, when > 1) or else the largest batches, for a retry.
        Called after the ``except`` block, once the failed attempt's tensors are freed."""
        self.oom_retries += 1
        if shrink_k and self._k() > 1:
            self.config.points_per_call = self._k() // 2
        else:
            cap = -(-self._batch_size() // 2)
            self.data = {s: halve_batches(b) if b.size > cap else b for s, b in self.data.items()}
            self.config.batch_size = cap
        log.warning(
            "out of GPU memory: retrying with %d point(s) per call, batch %d",
            self._k(), self.config.batch_size,
        )  # fmt: skip

    # -- choosing K and compiling ------------------------------------------------------------
    def _choose_k(self) -> float:
        """Time K grid points per call (eager, at θ) for each candidate K, keep the best (see
        ``choose_points_per_call``) and return its eager seconds per point. K points that do
        not fit end the trial; one point that does not fit halves the batch. The ranking is
        taken as compile's too; ``python -m bench.surface_gpu`` times compiled K on a GPU."""
        start = time.perf_counter()
        timings: dict[int, float] = {}

        def time_per_point(k: int) -> float:
            self.config.points_per_call = k
            while True:
                try:
                    timings[k] = self._time_group(k)
                    return timings[k]
                except torch.cuda.OutOfMemoryError as exc:
                    if k > 1:
                        self.oom_retries += 1
                        return math.inf
                    self._check_retry(exc, shrink_k=False)
                self._shrink(shrink_k=False)

        candidates = [k for k in K_CANDIDATES if k <= max(1, self.config.max_points_per_call)]
        k, reason = choose_points_per_call(time_per_point, candidates)
        self.config.points_per_call = k
        self.config.k_reason = reason
        self.config.timings["choose_k_s"] = time.perf_counter() - start
        return timings[k]

    def _time_group(self, k: int) -> float:
        """Best of two timed calls of K points at θ after a warm-up (cuDNN autotuning, the
        allocator), per point; each call ends in its transfer to the host, so it is timed
        whole."""
        zeros = np.zeros((k, self.ndim))
        best = math.inf
        for attempt in range(3):
            t0 = time.perf_counter()
            self._values(zeros)
            if attempt:
                best = min(best, time.perf_counter() - t0)
        return best / k

    def _eager_s_per_point(self) -> float:
        """Eager seconds per point at the K set, timed like the K trial; out of memory halves
        K or the batch first."""
        while True:
            try:
                return self._time_group(self._k())
            except torch.cuda.OutOfMemoryError as exc:
                self._check_retry(exc, shrink_k=True)
            self._shrink(shrink_k=True)

    def _decide_compile(self, eager_s_per_point: float, points_done: int) -> None:
        """After timing eager points: compile if the measured saving pays for the rest."""
        self._measure_first = False
        left = max(0, self.config.compile_share - points_done)
        pays, why = compile_after_measuring(
            eager_s_per_point, left, self.device.type, self.config.precision, splits=len(self.data)
        )
        self.config.compile_reason = why
        if pays:
            self._compile()

    def _compile(self) -> None:
        """Switch to the compiled per-batch functions, paying the compile now on each split's
        first batch at θ, checked against eager; eager stays if anything fails."""
        start = time.perf_counter()
        self.compile_reused = has_compiled(self._graph_key)
        if self.device.type == "cpu":  # inductor's C++ path warns about CUDA it does not use
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        try:
            while True:
                try:
                    self._check_compiled()
                    break
                except torch.cuda.OutOfMemoryError as exc:
                    self._check_retry(exc, shrink_k=True)
                self._shrink(shrink_k=True)
            self.compiled = True
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:  # compile is an optimization: eager is always correct
            self.compile_error = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("torch.compile failed, evaluating eagerly: %s", self.compile_error)
        self.config.timings["compile_s"] = time.perf_counter() - start

    def _check_compiled(self) -> None:
        """The compiled function against eager on each split's first batch at θ: losses within
        the precision's tolerance, at most that share of predictions flipped."""
        eager, head = self._head(np.zeros((self._k(), self.ndim)))
        rtol, flips = _COMPILE_TOLERANCE[self.config.precision]
        for split in self.data.values():
            batch = (split.xs[0], split.ys[0], split.masks[0])
            ref = eager(*head, *batch)
            got = compiled(eager, self._graph_key)(*head, *batch)
            max_flips = max(1, int(flips * split.size))
            if not torch.allclose(ref[0], got[0], rtol=rtol) or not bool(
                (ref[1] - got[1]).abs().max() <= max_flips
            ):
                raise RuntimeError(f"compiled result {got} differs from eager {ref}")

    # -- public --------------------------------------------------------------------------------
    def evaluate(self, coords: np.ndarray) -> dict[str, np.ndarray]:
        """``{split}_loss``/``{split}_acc`` (float64, shape ``(K,)``) at each row of ``coords``."""
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, self.ndim)
        out = {f"{s}_{m}": np.empty(len(coords)) for s in self.data for m in ("loss", "acc")}
        started = time.perf_counter()
        with self._computing():
            start = 0
            while start < len(coords):
                k = self._k()
                group = coords[start : start + k]
                real = len(group)
                if real < k:  # pad the last group with copies: one compiled shape
                    group = np.concatenate([group, np.repeat(group[-1:], k - real, axis=0)])
                try:
                    values: np.ndarray | None = self._values(group)
                except torch.cuda.OutOfMemoryError as exc:
                    self._check_retry(exc, shrink_k=True)
                    values = None
                if values is None:  # retried with the same points, K or the batch halved
                    self._shrink(shrink_k=True)
                    continue
                for i, (split, batches) in enumerate(self.data.items()):
                    out[f"{split}_loss"][start : start + real] = values[i, 0, :real] / batches.n
                    out[f"{split}_acc"][start : start + real] = values[i, 1, :real] / batches.n
                start += real
            if self._measure_first and len(coords):
                self._decide_compile((time.perf_counter() - started) / len(coords), len(coords))
        return out

    def close(self) -> None:
        """Let go of θ, the directions and the data, and move the model's own tensors to the
        meta device: a BN-folded module is a torch.fx GraphModule, which sits in a reference
        cycle with its graph, so dropping it would leave its weights on the device until the
        cyclic collector ran. The evaluator cannot evaluate afterwards."""
        self.data, self.static, self.base, self.stacked = {}, {}, {}, {}
        self.module.to("meta")

    def describe(self) -> dict[str, Any]:
        return {
            "device": str(self.device),
            "compile_error": self.compile_error,
            "vmap_error": self.vmap_error,
            "points_per_call": self.config.points_per_call,
            "k_reason": self.config.k_reason,
            "compiled": self.compiled,
            "compile_reused": self.compile_reused,
            "fp32_head": self.fp32_head,
            "compile_reason": self.config.compile_reason,
            "batch_size": self.config.batch_size,
            "oom_retries": self.oom_retries,
            "host_syncs": self.host_syncs,
            **self.config.timings,
        }
