"""Scale-out: the chunks of one surface run as Ray tasks on every CPU or GPU of a cluster.

The driver (``compute_surface``) still writes each chunk into the HDF5 file as it finishes, so
a lost task costs only its own chunk: Ray retries it (``max_retries``), and a driver killed
outright resumes from the file like any local run. Each Ray worker process builds one local
``GridEvaluator`` per surface (BN folding, compile) and reuses it for every chunk it gets.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
from torch import Tensor, nn

from landscape.errors import SpecError
from landscape.losses import Loss, LossFn, resolve_loss
from landscape.specs import EngineOptions

log = logging.getLogger(__name__)

Results = dict[str, np.ndarray]
MAX_RETRIES = 3  # a task lost with its worker or node is resubmitted this many times

# One prepared evaluator per surface in each Ray worker process, keyed by the surface's run id.
_WORKER_EVALUATORS: dict[str, Any] = {}


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise SpecError(
            "backend 'ray' needs Ray: pip install 'landscape[ray]' (or pip install ray)"
        ) from exc
    return ray


def _evaluate_chunk(
    run_id: str, payload_ref: list[Any], coords: np.ndarray
) -> tuple[Results, dict[str, Any]]:
    """Runs in a Ray worker. ``payload_ref`` is wrapped in a list so Ray does not fetch the
    model and data for every task: only the first chunk a worker sees deserializes them."""
    evaluator = _WORKER_EVALUATORS.get(run_id)
    if evaluator is None:
        import ray

        from landscape.engine.devices import flush_denormals
        from landscape.engine.evaluator import GridEvaluator

        flush_denormals()
        model, directions, data, loss, options, n_points = ray.get(payload_ref[0])
        for stale in list(_WORKER_EVALUATORS):  # one surface at a time per worker process
            _WORKER_EVALUATORS.pop(stale).close()
        evaluator = GridEvaluator(
            model, directions, data, loss=loss, options=options, n_points=n_points
        )
        _WORKER_EVALUATORS[run_id] = evaluator
    result = evaluator.evaluate(np.array(coords))  # Ray hands over a read-only view
    return result, evaluator.describe()


class RayEvaluator:
    """The ``GridEvaluator`` interface over Ray tasks; see the module docstring."""

    def __init__(
        self,
        model: nn.Module,
        directions: list[Mapping[str, Tensor]],
        data: dict[str, tuple[Tensor, Tensor]],
        *,
        loss: str | Loss | LossFn = "cross_entropy",
        options: EngineOptions | None = None,
        n_points: int | None = None,
    ) -> None:
        ray = self._ray = _import_ray()
        options = options or EngineOptions(backend="ray")
        start = time.perf_counter()
        self._started_ray = False
        if not ray.is_initialized():
            address = options.ray_address or os.environ.get("RAY_ADDRESS")
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
            self._started_ray = address is None
        resources = ray.cluster_resources()
        self.n_gpus = int(resources.get("GPU", 0)) if options.device != "cpu" else 0
        self.n_cpus = int(resources.get("CPU", 1))
        # Each task evaluates with one in-process core: Ray itself is the pool of workers.
        worker_options = dataclasses.replace(
            options,
            backend="local",
            workers=1,
            devices=None,  # Ray assigns each task its GPU (CUDA_VISIBLE_DEVICES)
            device="cuda" if self.n_gpus else "cpu",
        )
        self.options = options
        self.slots = self.n_gpus or self.n_cpus
        self._run_id = uuid.uuid4().hex
        # A copy: the caller's model keeps its device (a GPU model stays where it is).
        cpu_model = copy.deepcopy(model).cpu()
        # Each worker sees about its share of the points when judging whether compiling pays.
        share = None if n_points is None else max(1, n_points // self.slots)
        # a Loss, not a name: a Python callable's name means nothing in another process
        loss = resolve_loss(loss)
        payload = (cpu_model, [dict(d) for d in directions], data, loss, worker_options, share)
        self._payload_ref = ray.put(payload)
        self._task = ray.remote(_evaluate_chunk).options(
            num_cpus=0 if self.n_gpus else 1,
            num_gpus=1 if self.n_gpus else 0,
            max_retries=MAX_RETRIES,
            retry_exceptions=False,  # a bug or bad input fails fast; lost workers are retried
        )
        self._pending: dict[Any, int] = {}
        self._worker_info: dict[str, Any] = {}
        self.prepare_s = time.perf_counter() - start
        self.points_done = 0
        self._closed = False

    def imap(self, chunks: Iterable[np.ndarray]) -> Iterator[tuple[int, Results]]:
        """Submit chunks (at most two per slot in flight) and yield them as they finish."""
        ray = self._ray
        todo = iter(enumerate(chunks))
        limit = 2 * self.slots
        exhausted = False
        while True:
            while not exhausted and len(self._pending) < limit:
                item = next(todo, None)
                if item is None:
                    exhausted = True
                    break
                index, chunk = item
                coords = np.asarray(chunk, dtype=np.float64)
                ref = self._task.remote(self._run_id, [self._payload_ref], coords)
                self._pending[ref] = index
            if not self._pending:
                return
            ready, _ = ray.wait(list(self._pending), num_returns=1)
            ref = ready[0]
            index = self._pending.pop(ref)
            result, info = ray.get(ref)
            self._worker_info = info
            self.points_done += len(next(iter(result.values())))
            yield index, result

    def describe(self) -> dict[str, Any]:
        info = dict(self._worker_info)
        info.update(
            backend="ray",
            workers=self.slots,
            ray_gpus=self.n_gpus,
            ray_cpus=self.n_cpus,
            points_per_call=info.get("points_per_call", 1),
        )
        info.setdefault("timings", {})["ray_prepare_s"] = self.prepare_s
        return info

    def close(self) -> None:
        """Cancel chunks still in flight; stop Ray only if this evaluator started it."""
        if self._closed:
            return
        self._closed = True
        ray = self._ray
        for ref in list(self._pending):
            try:
                ray.cancel(ref, force=True)
            except Exception:
                log.debug("could not cancel a Ray task", exc_info=True)
        self._pending.clear()
        if self._started_ray:
            ray.shutdown()

    def __enter__(self) -> RayEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
