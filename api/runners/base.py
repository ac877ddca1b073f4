"""What every runner shares: the kinds of job, the context a runner gets, the runner type."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from api.settings import Settings


class JobKind(StrEnum):
    """A job's kind, as the ``jobs.kind`` column stores it (NULL in old rows: ``surface``)."""

    SURFACE = "surface"  # compute a surface file (training its zoo model first if needed)
    HESSIAN = "hessian"  # add the hessian/ group to a complete surface
    GRADIENT_FLOW = "gradient_flow"  # add the gradient_flow/ group to a complete surface
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
