"""The surface engine: loss and accuracy at many grid points ``θ + Σ c_k d_k``.

``GridEvaluator`` prepares once — data on the device, eval-mode BN folded into the convs and
the directions (``landscape.bn_fold``), channels_last, ``torch.compile`` — then evaluates
chunks of grid points. How the work is split is a per-device choice, measured on the target
machines (``bench/surface.py`` reproduces the measurements):

- CPU: one grid point per call (the per-point forward already fills a core), and one
  single-threaded worker process per core, each taking whole pieces of the grid.
- CUDA: one process, the data resident on the GPU, ``K`` grid points per call via
  ``torch.vmap`` over ``functional_call`` (one digits pass is far too small to fill a GPU).

``reference_evaluate`` is the naive per-point loop of the original tool (copy weights in,
iterate a DataLoader): the baseline for exactness tests and the benchmark.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import os
import queue
import signal
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from landscape.bn_fold import densify_small_convs, fold_batchnorm
from landscape.devices import resolve_device
from landscape.engine_core import CoreConfig, PointEvaluator, per_sample_loss, split_batches
from landscape.engine_plan import (
    compile_pays,
    configure_cuda,
    cpu_count,
    pick_batch_size,
    pick_points_per_call,
)
from landscape.errors import SpecError
from landscape.specs import EngineOptions, LossName, check_choice

log = logging.getLogger(__name__)

Data = Mapping[str, tuple[Tensor, Tensor]]
Results = dict[str, np.ndarray]

_WORKER_START_TIMEOUT_S = 600.0  # spawn + import torch + compile, on a busy machine


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
        loss: LossName = "cross_entropy",
        options: EngineOptions | None = None,
        n_points: int | None = None,
    ) -> None:
        """``n_points``: how many grid points will be evaluated, if known (the compile cost
        model weighs compile time against it; ``None`` assumes a 21×21 grid)."""
        check_choice("loss", loss, LossName)
        options = options or EngineOptions()
        if not directions:
            raise SpecError("GridEvaluator needs at least one direction")
        if not data:
            raise SpecError("GridEvaluator needs at least one data split")
        start = time.perf_counter()
        self.device = resolve_device(options.device)
        self.options = options
        self.ndim = len(directions)
        model = copy.deepcopy(model).cpu().eval()  # the caller's model is left untouched
        params = {n: p.detach().to(torch.float32) for n, p in model.named_parameters()}
        dirs = [{n: d[n].detach().to("cpu", torch.float32) for n in params} for d in directions]
        folded = fold_batchnorm(model, params, dirs)
        module: nn.Module = folded.module if folded is not None else model
        if folded is not None:
            params, dirs = folded.params, folded.directions
        self.n_bn_folded = folded.n_folded if folded is not None else 0
        # CPU: convs on tiny maps (3×3 on 2×2) as one exact dense matmul (bench/surface.py); on GPUs
        # the convs are batched over grid points instead, so leave them as they are
        self.n_dense = 0
        if self.device.type == "cpu":
            example = next(iter(data.values()))[0]
            traced = module if folded is not None else _trace(module)
            if traced is not None:
                self.n_dense = densify_small_convs(traced, params, dirs, example)
                module = traced if self.n_dense else module
        has_conv = any(isinstance(m, nn.Conv2d) for m in module.modules())
        self.channels_last = has_conv and all(x.dim() == 4 for x, _ in data.values())
        self.batch_size = options.batch_size or pick_batch_size(module, data, self.device)
        self.points_per_call = options.points_per_call or pick_points_per_call(
            module, data, self.batch_size, self.device
        )
        self.n_workers = self._pick_workers(options)
        if self.device.type == "cuda":
            configure_cuda(options)
        config = CoreConfig(
            loss=loss,
            device=str(self.device),
            batch_size=self.batch_size,
            points_per_call=self.points_per_call,
            compile=options.compile
            and compile_pays(module, data, self.device, n_points=n_points, workers=self.n_workers),
            channels_last=self.channels_last,
            precision=options.precision,
        )
        self.compiled = config.compile
        batches = {
            split: split_batches(x, y, self.batch_size, self.device, self.channels_last)
            for split, (x, y) in data.items()
        }
        self.splits = list(data)
        self._core: PointEvaluator | None = None
        self._workers: list[Any] = []
        self._task_ids = itertools.count()
        self._in_flight: set[int] = set()
        self._worker_info: list[dict[str, Any]] = []
        self._closed = False
        if self.n_workers > 1:
            self._start_workers(module, params, dirs, batches, config)
        if not self._workers:
            self.n_workers = 1
            self._core = PointEvaluator(module, params, dirs, batches, config)
            self._worker_info = [self._core.describe()]
        self.prepare_s = time.perf_counter() - start
        self.eval_s = 0.0
        self.points_done = 0

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
        """Provenance of how the numbers were computed, and timings."""
        compile_s = [w.get("compile_s", 0.0) for w in self._worker_info]
        errors = [w["compile_error"] for w in self._worker_info if w.get("compile_error")]
        method = "vmap" if self.points_per_call > 1 else "per-point"
        return {
            "device": str(self.device),
            "dtype": "float32" if self.options.precision == "fp32" else self.options.precision,
            "method": method + (" + compile" if self.compiled and not errors else ""),
            "bn_folded": self.n_bn_folded,
            "dense_convs": self.n_dense,
            "channels_last": self.channels_last,
            "points_per_call": self.points_per_call,
            "batch_size": self.batch_size,
            "workers": self.n_workers,
            "compile_errors": errors,
            "timings": {
                "prepare_s": self.prepare_s,
                "compile_s": max(compile_s, default=0.0),
                "eval_s": self.eval_s,
                "points": self.points_done,
            },
        }

    def close(self) -> None:
        """Stop the workers: politely when idle, killed at once when work is in flight."""
        if self._closed:
            return
        self._closed = True
        self._stop_workers(kill=bool(self._in_flight))

    def _stop_workers(self, *, kill: bool) -> None:
        for _ in self._workers:
            with contextlib.suppress(Exception):
                self._tasks.put(None)
        for proc in self._workers:
            if kill:
                proc.kill()
            proc.join(timeout=0.5 if kill else 10)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        for q in (getattr(self, "_tasks", None), getattr(self, "_results", None)):
            if q is not None:
                q.cancel_join_thread()
                q.close()
        self._workers = []

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

    def _pick_workers(self, options: EngineOptions) -> int:
        if self.device.type != "cpu":
            return 1
        if options.workers is not None:
            return max(1, options.workers)
        return cpu_count()

    def _start_workers(
        self,
        module: nn.Module,
        params: dict[str, Tensor],
        dirs: list[dict[str, Tensor]],
        batches: dict[str, Any],
        config: CoreConfig,
    ) -> None:
        """Spawn one single-threaded process per worker; each builds (and compiles) its own
        PointEvaluator. Spawn, not fork: safe with threads in the parent (API server) and
        independent of the parent's OpenMP state. Any start failure → in-process."""
        import torch.multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._tasks = ctx.Queue()
        self._results = ctx.Queue()
        payload = (module, params, dirs, batches, config)
        try:
            with _worker_env():
                for _ in range(self.n_workers):
                    proc = ctx.Process(
                        target=_worker_main,
                        args=(self._tasks, self._results, payload),
                        daemon=True,
                    )
                    proc.start()
                    self._workers.append(proc)
            for _ in self._workers:
                kind, info = self._next_result(_WORKER_START_TIMEOUT_S)
                if kind != "ready":
                    raise RuntimeError(f"worker failed to start: {info}")
                self._worker_info.append(info)
        except Exception as exc:
            log.warning("worker processes unavailable, evaluating in-process: %s", exc)
            self._stop_workers(kill=True)
            self._worker_info = []

    def _next_result(self, timeout: float) -> tuple[Any, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._results.get(timeout=1.0)  # type: ignore[no-any-return]
            except queue.Empty:
                dead = [p.pid for p in self._workers if not p.is_alive()]
                if dead:
                    raise RuntimeError(f"engine worker process(es) {dead} died") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"no answer from engine workers in {timeout:.0f} s"
                    ) from None

    def _imap_workers(self, chunks: Iterable[np.ndarray]) -> Iterator[tuple[int, Results]]:
        """Split each chunk into one piece per worker; keep two pieces per worker queued;
        yield a chunk when all its pieces are back."""
        pending: dict[int, tuple[int, int, int]] = {}  # task id → (chunk, start, stop)
        partial: dict[int, tuple[int, Results, int]] = {}  # chunk → (n points, values, left)
        chunk_iter = enumerate(chunks)
        exhausted = False
        max_queued = 2 * self.n_workers
        try:
            while True:
                while not exhausted and len(pending) < max_queued:
                    item = next(chunk_iter, None)
                    if item is None:
                        exhausted = True
                        break
                    index, chunk = item
                    coords = self._coords(chunk)
                    n_pieces = min(self.n_workers, 1 + len(coords) // 2)
                    pieces = [p for p in np.array_split(np.arange(len(coords)), n_pieces) if len(p)]
                    values = {
                        f"{s}_{m}": np.empty(len(coords))
                        for s in self.splits
                        for m in ("loss", "acc")
                    }
                    partial[index] = (len(coords), values, len(pieces))
                    if not pieces:
                        yield index, values
                        del partial[index]
                    for piece in pieces:
                        task_id = next(self._task_ids)
                        pending[task_id] = (index, int(piece[0]), int(piece[-1]) + 1)
                        self._in_flight.add(task_id)
                        self._tasks.put((task_id, coords[piece[0] : piece[-1] + 1]))
                if not pending:
                    return
                task_id, (result, elapsed) = self._next_result(float("inf"))
                if task_id == "error":
                    raise RuntimeError(f"engine worker failed:\n{result}")
                if task_id not in pending:
                    continue  # a stale answer from a cancelled iteration
                self._in_flight.discard(task_id)
                index, lo, hi = pending.pop(task_id)
                n, values, left = partial[index]
                for key, arr in result.items():
                    values[key][lo:hi] = arr
                self.eval_s += elapsed / self.n_workers
                self.points_done += hi - lo
                if left == 1:
                    del partial[index]
                    yield index, values
                else:
                    partial[index] = (n, values, left - 1)
        finally:
            if pending:  # abandoned mid-way: remember, so close() kills instead of waiting
                self._in_flight.update(pending)


# glibc malloc in the workers: keep freed activation buffers (~1 MB each at the CPU batch
# size) in the heap instead of returning them to the kernel, so every forward pass does not
# page-fault fresh zeroed pages in. Measured with 2 eager workers (resnet20, digits, bench):
# 0.043–0.051 vs 0.061–0.063 s/point. Only set when the user has not set it.
_WORKER_GLIBC_TUNABLES = (
    "glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=536870912"
)


@contextlib.contextmanager
def _worker_env() -> Iterator[None]:
    """Environment for spawned workers (inherited at spawn), restored afterwards."""
    added = "GLIBC_TUNABLES" not in os.environ
    if added:
        os.environ["GLIBC_TUNABLES"] = _WORKER_GLIBC_TUNABLES
    try:
        yield
    finally:
        if added:
            os.environ.pop("GLIBC_TUNABLES", None)


def _trace(model: nn.Module) -> nn.Module | None:
    """A torch.fx copy of ``model`` (same parameter names), or ``None`` if it cannot trace."""
    try:
        return torch.fx.symbolic_trace(copy.deepcopy(model))
    except Exception:
        return None


def _worker_main(tasks: Any, results: Any, payload: tuple[Any, ...]) -> None:
    """A worker process: one thread, its own PointEvaluator, tasks until ``None``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    torch.set_num_threads(1)
    try:
        module, params, dirs, batches, config = payload
        core = PointEvaluator(module, params, dirs, batches, config)
        results.put(("ready", core.describe()))
    except BaseException:
        results.put(("init_error", traceback.format_exc()))
        return
    parent = os.getppid()
    while True:
        try:
            task = tasks.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:  # the parent was killed (kill -9): do not linger
                return
            continue
        if task is None:
            return
        task_id, coords = task
        try:
            start = time.perf_counter()
            values = core.evaluate(coords)
            results.put((task_id, (values, time.perf_counter() - start)))
        except BaseException:
            results.put(("error", (traceback.format_exc(), 0.0)))


def reference_evaluate(
    model: nn.Module,
    directions: list[Mapping[str, Tensor]],
    coords: np.ndarray,
    data: Data,
    *,
    loss: LossName = "cross_entropy",
    batch_size: int = 128,
) -> Results:
    """The naive per-point loop of the original tool: for each point copy ``θ + Σ c_k d_k``
    into the model's parameters, then iterate a DataLoader in eval mode. Restores θ after."""
    check_choice("loss", loss, LossName)
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, len(directions))
    model.eval()
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = {f"{s}_{m}": np.empty(len(coords)) for s in data for m in ("loss", "acc")}
    try:
        with torch.no_grad():
            for i, point in enumerate(coords):
                for name, p in model.named_parameters():
                    value = theta[name].clone()
                    for c, d in zip(point, directions, strict=True):
                        value.add_(d[name].to(value.device), alpha=float(c))
                    p.copy_(value)
                for split, (x, y) in data.items():
                    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size)
                    total, correct = 0.0, 0
                    for xb, yb in loader:
                        logits = model(xb)
                        total += float(per_sample_loss(logits, yb, loss).double().sum())
                        correct += int((logits.argmax(dim=1) == yb).sum())
                    out[f"{split}_loss"][i] = total / len(x)
                    out[f"{split}_acc"][i] = correct / len(x)
    finally:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(theta[name])
    return out
