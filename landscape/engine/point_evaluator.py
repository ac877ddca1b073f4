"""Evaluation of grid points inside one process: ``θ + Σ c_k d_k`` → loss and accuracy sums.

``PointEvaluator`` is what ``GridEvaluator`` runs in-process or in each worker process. It
holds the (possibly BN-folded) model, θ and the directions stacked per parameter, and the data
already on the device in equal-sized, padded batches — equal shapes mean one compilation, and
padded samples are masked out of the sums so they change nothing.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from landscape.engine.plan import (
    K_CANDIDATES,
    choose_points_per_call,
    compile_after_measuring,
    configure_cuda,
)
from landscape.specs import LossName, ResolvedPrecision

log = logging.getLogger(__name__)


# How far the compiled function may differ from eager at θ before it is rejected: fused
# kernels sum in another order, which moves reduced-precision results the most (relative
# loss, fraction of samples whose predicted class may flip).
_COMPILE_TOLERANCE = {"fp32": (1e-4, 0.0), "tf32": (2e-3, 1e-3), "bf16": (3e-2, 5e-3)}


def per_sample_loss(logits: Tensor, y: Tensor, loss: LossName) -> Tensor:
    """Per-sample loss, shape ``(B,)``.

    ``mse`` follows the reference tool (Li et al. 2018 code): squared error between
    ``softmax(logits)`` and the one-hot target, averaged over classes.
    """
    if loss == "cross_entropy":
        return F.cross_entropy(logits, y, reduction="none")
    probs = logits.softmax(dim=1)
    target = F.one_hot(y, logits.shape[1]).to(probs.dtype)
    return (probs - target).pow(2).mean(dim=1)


@dataclass
class SplitBatches:
    """One split's data as equal-shaped batches on the device; ``mask`` marks real samples."""

    xs: list[Tensor]
    ys: list[Tensor]
    masks: list[Tensor]
    n: int


@dataclass
class CoreConfig:
    """What a ``PointEvaluator`` needs besides tensors (plain values: it crosses processes)."""

    loss: LossName
    device: str
    batch_size: int
    points_per_call: int  # 0: time candidates on this device and keep the best
    compile: bool
    channels_last: bool
    precision: ResolvedPrecision = "fp32"
    max_points_per_call: int = 8  # the largest K tried when ``points_per_call`` is 0
    # > 0 (with ``compile``): the points this process expects; compile only once timing the
    # first points eagerly shows it pays (CPU). 0: compile up front.
    compile_share: int = 0
    k_reason: str = ""
    compile_reason: str = ""
    timings: dict[str, float] = field(default_factory=dict)


def split_batches(
    x: Tensor, y: Tensor, batch_size: int, device: torch.device, channels_last: bool
) -> SplitBatches:
    """Cut ``(x, y)`` into batches of equal size (≤ ``batch_size``), the last one padded."""
    n = x.shape[0]
    n_batches = max(1, -(-n // batch_size))
    size = -(-n // n_batches)  # balanced: padding is < n_batches samples in all
    xs, ys, masks = [], [], []
    for start in range(0, n, size):
        xb, yb = x[start : start + size], y[start : start + size]
        pad = size - xb.shape[0]
        mask = torch.ones(size, dtype=torch.bool)
        if pad:
            xb = torch.cat([xb, xb.new_zeros((pad, *xb.shape[1:]))])
            yb = torch.cat([yb, yb.new_zeros(pad)])
            mask[size - pad :] = False
        xb = xb.to(device=device, dtype=torch.float32)
        if channels_last and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        xs.append(xb)
        ys.append(yb.to(device))
        masks.append(mask.to(device))
    return SplitBatches(xs, ys, masks, n)


class PointEvaluator:
    """Loss/accuracy of ``module`` at ``θ + Σ c_k d_k`` over every split, in one process."""

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
        if self.device.type == "cuda":
            if self.device.index is not None:
                torch.cuda.set_device(self.device)
            configure_cuda(config.precision)
        self.module = module.to(self.device).eval()
        self.data = {split: _to_device(b, self.device) for split, b in data.items()}
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
        self._batch_fn: Callable[..., tuple[Tensor, Tensor]] = self._eager_batch
        self.compile_error: str | None = None
        if config.points_per_call == 0:
            self._choose_k()
        if config.points_per_call > 1:
            self._batch_fn = self._eager_batch_k
        self._measure_first = bool(config.compile and config.compile_share > 0)
        self.compiled = False
        self.config.timings.setdefault("compile_s", 0.0)
        if config.compile and not self._measure_first:
            self._compile()

    # -- the per-batch functions -------------------------------------------------------------
    def _eager_batch(
        self, params: dict[str, Tensor], x: Tensor, y: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Loss sum (float64) and correct count of one batch at one grid point."""
        logits = functional_call(self.module, params, (x,))
        per = per_sample_loss(logits.float(), y, self.config.loss)
        loss_sum = torch.where(mask, per, torch.zeros_like(per)).double().sum()
        correct = ((logits.argmax(dim=1) == y) & mask).sum()
        return loss_sum, correct

    def _eager_batch_k(
        self, params: dict[str, Tensor], x: Tensor, y: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The same for K grid points at once: moving params carry a leading K dimension."""
        moving = {n: params[n] for n in self.stacked}
        static = {n: params[n] for n in self.static}

        def one(p: dict[str, Tensor]) -> Tensor:
            logits: Tensor = functional_call(self.module, {**static, **p}, (x,))
            return logits

        logits = torch.vmap(one)(moving)  # (K, B, classes)
        k, b, c = logits.shape
        per = per_sample_loss(logits.reshape(k * b, c).float(), y.repeat(k), self.config.loss)
        per = torch.where(mask.repeat(k), per, torch.zeros_like(per)).view(k, b)
        correct = ((logits.argmax(dim=2) == y) & mask).sum(dim=1)
        return per.double().sum(dim=1), correct

    def _choose_k(self) -> None:
        """Time K grid points per call (eager, at θ) for each candidate K and keep the best;
        see ``choose_points_per_call``. The ranking is taken as compile's too (compile is decided
        afterwards); ``python -m bench.surface_gpu`` times compiled K on a GPU."""
        start = time.perf_counter()
        zeros = np.zeros((1, self.ndim))

        def time_per_point(k: int) -> float:
            self.config.points_per_call = k
            self._batch_fn = self._eager_batch_k if k > 1 else self._eager_batch
            best = float("inf")
            with torch.inference_mode(), self._autocast():
                for attempt in range(3):  # warm-up (cuDNN autotune, allocator), best of two
                    t0 = time.perf_counter()
                    params = self._params_at(np.repeat(zeros, k, axis=0))
                    for batches in self.data.values():
                        self._split_sums(params, batches)  # ends in .cpu(): synchronized
                    if attempt:
                        best = min(best, time.perf_counter() - t0)
            return best / k

        candidates = [k for k in K_CANDIDATES if k <= max(1, self.config.max_points_per_call)]
        k, reason = choose_points_per_call(time_per_point, candidates)
        self.config.points_per_call = k
        self.config.k_reason = reason
        self._batch_fn = self._eager_batch
        self.config.timings["choose_k_s"] = time.perf_counter() - start

    def _compile(self) -> None:
        """torch.compile the per-batch function (weights are inputs: no per-point recompiles),
        run it once to pay the compile now, and fall back to eager if anything fails."""
        eager = self._batch_fn
        start = time.perf_counter()
        if self.device.type == "cpu":  # inductor's C++ path warns about CUDA it does not use
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        try:
            compiled = torch.compile(eager, dynamic=False)
            with torch.inference_mode(), self._autocast():
                for split in self.data.values():
                    ref = eager(self._params_at(np.zeros((self._k(), self.ndim))), *_b0(split))
                    got = compiled(self._params_at(np.zeros((self._k(), self.ndim))), *_b0(split))
                    rtol, flips = _COMPILE_TOLERANCE[self.config.precision]
                    max_flips = max(1, int(flips * split.xs[0].shape[0]))
                    if not torch.allclose(ref[0], got[0], rtol=rtol) or not bool(
                        (ref[1] - got[1]).abs().max() <= max_flips
                    ):
                        raise RuntimeError(f"compiled result {got} differs from eager {ref}")
            self._batch_fn = compiled
            self.compiled = True
        except Exception as exc:  # compile is an optimization: eager is always correct
            self.compile_error = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("torch.compile failed, evaluating eagerly: %s", self.compile_error)
        self.config.timings["compile_s"] = time.perf_counter() - start

    def _k(self) -> int:
        return self.config.points_per_call

    def _params_at(self, coefs: np.ndarray) -> dict[str, Tensor]:
        """θ + Σ_k c_k d_k for one point (``coefs`` shape ``(1, ndim)`` with K = 1) or K points."""
        c = torch.as_tensor(coefs, dtype=torch.float32, device=self.device)
        out = dict(self.static)
        for n, base in self.base.items():
            d = self.stacked[n]
            if self._k() == 1:
                p = base.clone()
                for j in range(self.ndim):
                    p.add_(d[j], alpha=float(coefs[0, j]))
            else:
                p = base.unsqueeze(0) + torch.einsum("kj,j...->k...", c, d)
            out[n] = p
        return out

    # -- public --------------------------------------------------------------------------------
    def evaluate(self, coords: np.ndarray) -> dict[str, np.ndarray]:
        """``{split}_loss``/``{split}_acc`` (float64, shape ``(K,)``) at each row of ``coords``."""
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, self.ndim)
        k = self._k()
        out = {f"{s}_{m}": np.empty(len(coords)) for s in self.data for m in ("loss", "acc")}
        started = time.perf_counter()
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(coords), k):
                group = coords[start : start + k]
                real = len(group)
                if real < k:  # pad the last group with copies: one compiled shape
                    group = np.concatenate([group, np.repeat(group[-1:], k - real, axis=0)])
                params = self._params_at(group)
                for split, batches in self.data.items():
                    loss_sum, correct = self._split_sums(params, batches)
                    out[f"{split}_loss"][start : start + real] = loss_sum[:real] / batches.n
                    out[f"{split}_acc"][start : start + real] = correct[:real] / batches.n
        if self._measure_first and len(coords):
            self._decide_compile((time.perf_counter() - started) / len(coords), len(coords))
        return out

    def _decide_compile(self, eager_s_per_point: float, points_done: int) -> None:
        """After the first eager points (real results): compile if it pays for the rest."""
        self._measure_first = False
        left = max(0, self.config.compile_share - points_done)
        pays, why = compile_after_measuring(eager_s_per_point, left)
        self.config.compile_reason = why
        if pays:
            self._compile()

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast on CUDA when asked (``precision="bf16"``; its error against strict
        fp32 is what ``python -m bench.surface_gpu`` prints); losses are still computed from
        float32 logits."""
        if self.config.precision == "bf16" and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _split_sums(
        self, params: dict[str, Tensor], batches: SplitBatches
    ) -> tuple[np.ndarray, np.ndarray]:
        loss_sum: Tensor | None = None
        correct: Tensor | None = None
        for x, y, mask in zip(batches.xs, batches.ys, batches.masks, strict=True):
            ls, cs = self._batch_fn(params, x, y, mask)
            loss_sum = ls if loss_sum is None else loss_sum + ls
            correct = cs if correct is None else correct + cs
        assert loss_sum is not None and correct is not None
        return (
            loss_sum.reshape(-1).cpu().numpy().astype(np.float64),
            correct.reshape(-1).cpu().numpy().astype(np.float64),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "device": str(self.device),
            "compile_error": self.compile_error,
            "points_per_call": self.config.points_per_call,
            "k_reason": self.config.k_reason,
            "compiled": self.compiled,
            "compile_reason": self.config.compile_reason,
            **self.config.timings,
        }


def _to_device(batches: SplitBatches, device: torch.device) -> SplitBatches:
    """The batches on ``device`` (a no-op where they already are; memory format kept)."""
    return SplitBatches(
        [x.to(device) for x in batches.xs],
        [y.to(device) for y in batches.ys],
        [m.to(device) for m in batches.masks],
        batches.n,
    )


def _b0(split: SplitBatches) -> tuple[Tensor, Tensor, Tensor]:
    return split.xs[0], split.ys[0], split.masks[0]
