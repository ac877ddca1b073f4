"""The surface engine: loss and accuracy at many grid points ``θ + Σ c_k d_k``.

``GridEvaluator`` prepares once — data on the device, eval-mode BN folded into the convs and
the directions (``landscape.engine.bn_fold``), channels_last, ``torch.compile`` — then evaluates
chunks of grid points. How the work is split is a per-device choice, measured
(``docs/performance.md``):

- CPU: fp32, one grid point per call (the per-point forward already fills a core), and one
  single-threaded worker process per core, each taking pieces of every chunk.
- CUDA: TF32 by default, the data resident on the GPU, one worker process per visible GPU
  (in-process for one), ``K`` grid points per call (``torch.vmap``) timed per workload.

Worker processes live in ``landscape.engine.pool``; ``reference_evaluate`` (the original
tool's naive loop, the baseline of tests and benchmark) in ``landscape.engine.reference``.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.engine.batches import split_batches
from landscape.engine.bn_fold import densify_small_convs, fold_batchnorm
from landscape.engine.devices import resolve_device
from landscape.engine.fx_trace import symbolic_trace
from landscape.engine.plan import (
    DEFAULT_POINTS,
    max_points_per_call,
    pick_batch_size,
    plan_compile,
    plan_worker_devices,
    resolve_precision,
)
from landscape.engine.point_evaluator import CoreConfig, PointEvaluator
from landscape.engine.pool import WorkerPool
from landscape.engine.precision import DTYPE_LABEL
from landscape.engine.reference import reference_evaluate
from landscape.errors import SpecError
from landscape.losses import Loss, LossFn, resolve_loss
from landscape.specs import EngineOptions

__all__ = ["GridEvaluator", "reference_evaluate"]

log = logging.getLogger(__name__)

Data = Mapping[str, tuple[Tensor, Tensor]]
Results = dict[str, np.ndarray]


class GridEvaluator:
    """Evaluates grid points of one model, set of directions and data; see module docstring.

    Use as a context manager (or call ``close()``): on CPU it owns worker processes.
    """

    def __init__(
        self,
        model: nn.Module,
        directions: list[Mapping[str, Tensor]],
        data: Data,
        *,
        loss: str | Loss | LossFn = "cross_entropy",
        options: EngineOptions | None = None,
        n_points: int | None = None,
    ) -> None:
        """``n_points``: how many grid points will be evaluated, if known (compiling is
        weighed against it; ``None`` assumes a 21×21 grid). ``loss``: a name, ``Loss`` or
        ``loss(model, inputs, targets)`` callable (``landscape.losses``)."""
        self.loss = resolve_loss(loss)
        options = options or EngineOptions()
        if not directions:
            raise SpecError("GridEvaluator needs at least one direction")
        if not data:
            raise SpecError("GridEvaluator needs at least one data split")
        start = time.perf_counter()
        self.device = resolve_device(options.device)
        self.precision = resolve_precision(options, self.device)  # refuses tf32/bf16 on CPU
        self.options = options
        self.ndim = len(directions)
        self.splits = list(data)
        self._task_ids = itertools.count()
        self._in_flight: set[int] = set()
        self._closed = False
        self._core: PointEvaluator | None = None
        self._pool: WorkerPool | None = None
        self._info_at_close: list[dict[str, Any]] | None = None
        self.worker_devices = plan_worker_devices(self.device, options)
        if len(self.worker_devices) > 1:  # they import torch while this process prepares
            self._pool = self._start_pool(self.worker_devices)
        try:
            module, params, dirs, batches, config = self._prepare(
                model, directions, data, self.loss, options, n_points
            )
        except BaseException:
            self.close()
            raise
        if self._pool is not None:
            try:
                self._pool.load((module, params, dirs, batches, config))
            except Exception as exc:
                log.warning("worker processes unavailable, evaluating in-process: %s", exc)
                self._pool.close(kill=True)
                self._pool = None
        if self._pool is None:
            self.worker_devices = self.worker_devices[:1]
            config.device = self.worker_devices[0]
            self._core = PointEvaluator(module, params, dirs, batches, config)
        self.n_workers = len(self.worker_devices)
        self.prepare_s = time.perf_counter() - start
        self.eval_s = 0.0
        self.points_done = 0

    def _prepare(
        self,
        model: nn.Module,
        directions: list[Mapping[str, Tensor]],
        data: Data,
        loss: Loss,
        options: EngineOptions,
        n_points: int | None,
    ) -> tuple[nn.Module, dict[str, Tensor], list[dict[str, Tensor]], dict[str, Any], CoreConfig]:
        """Fold BN, densify tiny convs (CPU), pick batch size, K and compile; cut the data.
        A loss that sees the model gets the model as it is: folding or densifying would
        change the parameters it sees, and it runs eager."""
        model = copy.deepcopy(model).cpu().eval()  # the caller's model is left untouched
        params = {n: p.detach().to(torch.float32) for n, p in model.named_parameters()}
        dirs = [{n: d[n].detach().to("cpu", torch.float32) for n in params} for d in directions]
        folded = None if loss.sees_model else fold_batchnorm(model, params, dirs)
        module: nn.Module = folded.module if folded is not None else model
        if folded is not None:
            params, dirs = folded.params, folded.directions
        self.n_bn_folded = folded.n_folded if folded is not None else 0
        # CPU: convs on tiny maps (3×3 on 2×2) as one exact dense matmul; on GPUs leave them
        self.n_dense = 0
        if self.device.type == "cpu" and not loss.sees_model:
            example = next(iter(data.values()))[0]
            traced = module if folded is not None else _trace(module)
            if traced is not None:
                self.n_dense = densify_small_convs(traced, params, dirs, example)
                module = traced if self.n_dense else module
        has_conv = any(isinstance(m, nn.Conv2d) for m in module.modules())
        self.channels_last = has_conv and all(x.dim() == 4 for x, _ in data.values())
        # sized by the memory of the (first) device that computes, e.g. cuda:1 for devices=(1,)
        sizing = torch.device(self.worker_devices[0])
        sharing = self.worker_devices.count(self.worker_devices[0])  # processes on that device
        self.batch_size = options.batch_size or pick_batch_size(
            module, data, sizing, processes=sharing
        )
        # CPU: K = 1 (measured); CUDA: 0 = each evaluator times candidate K on its device
        points_per_call = options.points_per_call or (0 if self.device.type == "cuda" else 1)
        n_workers = len(self.worker_devices)
        compile_mode, compile_reason = plan_compile(
            options.compile, module, data, self.device, n_points=n_points, workers=n_workers
        )
        if loss.sees_model:
            compile_mode, compile_reason = False, f"loss {loss.name!r} sees the model: eager"
        config = CoreConfig(
            loss=loss,
            device=str(self.device),
            batch_size=self.batch_size,
            points_per_call=points_per_call,
            compile=compile_mode,
            # each process weighs compiling against its share of the points
            compile_share=-(-(n_points or DEFAULT_POINTS) // n_workers),
            compile_reason=compile_reason,
            channels_last=self.channels_last,
            precision=self.precision,
            max_points_per_call=max_points_per_call(
                module, data, self.batch_size, sizing, processes=sharing
            ),
            k_reason="set by the caller"
            if options.points_per_call
            else "CPU: one point fills a core; batching points measured slower",
        )
        # workers move the data to their own device; in-process it goes there now
        where = torch.device("cpu") if self._pool is not None else self.device
        batches = {
            split: split_batches(x, y, self.batch_size, where, self.channels_last)
            for split, (x, y) in data.items()
        }
        return module, params, dirs, batches, config

    def _start_pool(self, devices: list[str]) -> WorkerPool | None:
        try:
            return WorkerPool(devices)
        except Exception as exc:  # e.g. no /dev/shm: evaluate in-process
            log.warning("worker processes unavailable, evaluating in-process: %s", exc)
            return None

    @property
    def points_per_call(self) -> int:
        """K of the (first) evaluator: chosen by timing on CUDA, 1 on CPU."""
        return int(self._worker_info()[0].get("points_per_call", 1))

    def _worker_info(self) -> list[dict[str, Any]]:
        if self._info_at_close is not None:
            return self._info_at_close
        if self._core is not None:
            return [self._core.describe()]
        return (self._pool.info if self._pool is not None else None) or [{}]

    # -- public ----------------------------------------------------------------------------
    def evaluate(self, coords: np.ndarray) -> Results:
        """Values at each row of ``coords`` (shape ``(K, ndim)``): ``{split}_loss`` (mean
        loss) and ``{split}_acc`` (fraction correct), each ``(K,)`` float64."""
        for _, result in self.imap([coords]):
            return result
        raise AssertionError("imap yielded nothing for one chunk")

    def imap(self, chunks: Iterable[np.ndarray]) -> Iterator[tuple[int, Results]]:
        """``(chunk index, results)`` for each chunk, as chunks finish (any order).

        Stop iterating and ``close()`` to cancel: workers are killed, not waited for.
        """
        self._check_open()
        if self._core is not None:
            for index, chunk in enumerate(chunks):
                coords = self._coords(chunk)
                start = time.perf_counter()
                result = self._core.evaluate(coords)
                self.eval_s += time.perf_counter() - start
                self.points_done += len(coords)
                yield index, result
            return
        yield from self._imap_workers(chunks)

    def describe(self) -> dict[str, Any]:
        """Provenance of how the numbers were computed (precision, K and why, compile and why,
        devices), and timings. ``compiled`` is whether the compiled path computed the points
        in every worker (false when compile was off or did not pay, failed, was rejected by
        the check against eager, or fell back at run time)."""
        info = self._worker_info()
        compile_s = [w.get("compile_s", 0.0) for w in info]
        errors = [w["compile_error"] for w in info if w.get("compile_error")]
        ks = sorted({int(w.get("points_per_call", 1)) for w in info})
        compiled = all(bool(w.get("compiled")) for w in info)
        method = "vmap" if max(ks) > 1 else "per-point"
        return {
            "device": str(self.device),
            "devices": list(self.worker_devices),
            "precision": self.precision,
            "dtype": DTYPE_LABEL[self.precision],
            "method": method + (" + compile" if compiled else ""),
            "compiled": compiled,
            # the compiled graphs came from an earlier surface of this architecture
            "compile_reused": compiled and all(bool(w.get("compile_reused")) for w in info),
            "compile_reason": str(info[0].get("compile_reason", "")),
            "fp32_head": info[0].get("fp32_head"),  # bf16: the float32 classifier layer
            "bn_folded": self.n_bn_folded,
            "dense_convs": self.n_dense,
            "channels_last": self.channels_last,
            "points_per_call": max(ks),  # workers time K each; on one device type they agree
            "points_per_call_by_worker": [int(w.get("points_per_call", 1)) for w in info],
            "points_per_call_reason": info[0].get("k_reason", ""),
            # the largest batch in use: planned, or halved after out-of-memory errors
            "batch_size": min(int(w.get("batch_size", self.batch_size)) for w in info),
            "oom_retries": sum(int(w.get("oom_retries", 0)) for w in info),
            "host_syncs": sum(int(w.get("host_syncs", 0)) for w in info),
            "workers": self.n_workers,
            "worker_restarts": self._pool.restarts if self._pool is not None else 0,
            "compile_errors": errors,
            "loss": self.loss.name,
            "loss_sees_model": self.loss.sees_model,
            "vmap_errors": [w["vmap_error"] for w in info if w.get("vmap_error")],
            "timings": {
                "prepare_s": self.prepare_s,
                "compile_s": max(compile_s, default=0.0),
                "choose_k_s": max((w.get("choose_k_s", 0.0) for w in info), default=0.0),
                "eval_s": self.eval_s,
                "points": self.points_done,
            },
        }

    def worker_pids(self) -> list[int]:
        """Process ids of the worker processes (empty when evaluating in-process)."""
        return self._pool.pids() if self._pool is not None else []

    def close(self) -> None:
        """Stop the workers (politely when idle, killed at once when work is in flight) and
        drop the in-process core with its model, directions and data: on a GPU their memory
        is free when this returns. ``describe()`` still answers, from a snapshot."""
        if self._closed:
            return
        self._closed = True
        if self._core is not None or self._pool is not None:
            self._info_at_close = self._worker_info()
        if self._core is not None:
            self._core.close()
            self._core = None
        if self._pool is not None:
            self._pool.close(kill=bool(self._in_flight))

    def __enter__(self) -> GridEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- internals ---------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("GridEvaluator is closed")

    def _coords(self, chunk: np.ndarray) -> np.ndarray:
        coords = np.asarray(chunk, dtype=np.float64)
        if coords.ndim == 1 and self.ndim == 1:
            coords = coords[:, None]
        if coords.ndim != 2 or coords.shape[1] != self.ndim:
            raise SpecError(f"coords must have shape (K, {self.ndim}), got {coords.shape}")
        return coords

    def _imap_workers(self, chunks: Iterable[np.ndarray]) -> Iterator[tuple[int, Results]]:
        """Split each chunk into one piece per worker; yield a chunk when all its pieces are
        back. A lost worker's pieces are computed again by its replacement."""
        assert self._pool is not None
        pending: dict[int, tuple[int, int, int]] = {}  # task id → (chunk, start, stop)
        partial: dict[int, tuple[Results, int]] = {}  # chunk → (values, pieces left)
        ready: list[tuple[int, Results]] = []

        def pieces() -> Iterator[tuple[int, np.ndarray]]:
            for index, chunk in enumerate(chunks):
                coords = self._coords(chunk)
                n_pieces = min(self.n_workers, 1 + len(coords) // 2)
                split = [p for p in np.array_split(np.arange(len(coords)), n_pieces) if len(p)]
                values = {
                    f"{s}_{m}": np.empty(len(coords)) for s in self.splits for m in ("loss", "acc")
                }
                if not split:
                    ready.append((index, values))
                    continue
                partial[index] = (values, len(split))
                for piece in split:
                    task_id = next(self._task_ids)
                    lo, hi = int(piece[0]), int(piece[-1]) + 1
                    pending[task_id] = (index, lo, hi)
                    self._in_flight.add(task_id)
                    yield task_id, coords[lo:hi]

        try:
            for task_id, result, elapsed in self._pool.run(pieces()):
                while ready:
                    yield ready.pop()
                self._in_flight.discard(task_id)
                index, lo, hi = pending.pop(task_id)
                values, left = partial[index]
                for key, arr in result.items():
                    values[key][lo:hi] = arr
                self.eval_s += elapsed / self.n_workers
                self.points_done += hi - lo
                if left == 1:
                    del partial[index]
                    yield index, values
                else:
                    partial[index] = (values, left - 1)
            while ready:
                yield ready.pop()
        finally:
            if pending:  # abandoned mid-way: remember, so close() kills instead of waiting
                self._in_flight.update(pending)


def _trace(model: nn.Module) -> nn.Module | None:
    """A torch.fx copy of ``model`` (same parameter names), or ``None`` if it cannot trace."""
    try:
        return symbolic_trace(copy.deepcopy(model))
    except Exception:
        return None
