"""What every runner shares: the kinds of job, the context a runner gets, the runner type,
and where a job runs.

A stored plan says what to compute; where and how (device, engine processes, compile, backend,
Ray address) is read here from the settings of the process executing it, at run time, so a
job planned by a CPU-only API runs on the GPU of the worker that claims it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, cast

import torch
from sqlalchemy.orm import Session, sessionmaker

from api.settings import Settings
from landscape.engine.devices import resolve_device
from landscape.engine.plan import resolve_precision
from landscape.errors import SpecError
from landscape.specs import EngineOptions, Precision


class JobKind(StrEnum):
    """A job's kind, as the ``jobs.kind`` column stores it (NULL in old rows: ``surface``)."""

    SURFACE = "surface"  # compute a surface file (training its zoo model first if needed)
    HESSIAN = "hessian"  # add the hessian/ group to a complete surface
    GRADIENT_FLOW = "gradient_flow"  # add the gradient_flow/ group to a complete surface
    SHARPNESS = "sharpness"  # add the sharpness/ group (λmax along training) to a surface
    REPORT = "report"  # a skip-vs-plain reproduction (its job's surface_id is the report id)


@dataclass
class JobContext:
    """What a runner gets besides its plan: where things go and how to report."""

    job_id: str
    settings: Settings
    sessions: sessionmaker[Session]
    should_stop: Callable[[], bool]
    report: Callable[..., None]  # report(stage=..., done=..., total=..., eta=..., train=...)
    _first: tuple[float, int] | None = field(default=None, repr=False)

    def on_progress(self, done: int, total: int, eta: float | None = None) -> None:
        """The one progress shape of every library call: ``done`` of ``total`` steps (steps
        finished by an earlier, interrupted run included). Without an ``eta`` from the library,
        one is estimated from this run's rate since its first report."""
        now = time.monotonic()
        if self._first is None:
            self._first = (now, done)
        start, first_done = self._first
        if eta is None and done > first_done:
            eta = (now - start) / (done - first_done) * (total - done)
        self.report(stage="computing", done=done, total=total, eta=eta)


# A runner executes one job's stored plan (plain JSON) and returns when it is done; it raises
# CancelledError when ``ctx.should_stop()`` turned true, a LandscapeError for bad input.
Runner = Callable[[dict[str, Any], JobContext], None]


def worker_device(settings: Settings) -> torch.device:
    """The device this process runs jobs on (``LANDSCAPE_DEVICE``; CUDA asked for without one
    is a SpecError, which fails the job saying so)."""
    return resolve_device(settings.device)


def engine_options(settings: Settings, precision: str) -> EngineOptions:
    """How this worker evaluates a plan's grid points: the plan's declared ``precision`` (part
    of the surface id) with this worker's device, processes, compile, backend and Ray address.

    A precision this worker's device cannot compute (tf32/bf16 on a CPU) fails the job before
    any work, rather than labelling a surface with numbers it does not hold."""
    options = EngineOptions(
        device=settings.device,
        precision=cast(Precision, precision),  # EngineOptions checks the name
        devices=settings.engine_devices,
        workers=settings.engine_workers,
        compile=settings.engine_compile,
        backend=settings.engine_backend,
        ray_address=settings.ray_address,
    )
    device = worker_device(settings)
    try:
        resolve_precision(options, device)
    except SpecError as exc:
        raise SpecError(
            f"this worker's device is {device.type} and the job declares precision "
            f"{precision!r}: {exc}. Run it on a CUDA worker, or give the API and workers "
            f"LANDSCAPE_COMPUTE_DEVICE={device.type} and request it again"
        ) from exc
    return options
