"""The fair queue: which queued job a worker takes next, and when each queued job will start.

The rule (docs/deploy.md, "The queue"):

- **Express lane.** Express workers (``LANDSCAPE_EXPRESS_WORKERS``, one by default) take only
  jobs whose estimated work (run time beyond the per-job overhead) is at most
  ``LANDSCAPE_EXPRESS_MAX_SECONDS``, oldest first. A small
  interactive job therefore starts within a poll even while every other worker is busy for an
  hour with demo or report jobs (jobs are never preempted, so ordering alone cannot do that).
- **General lane.** Other workers take any job: shortest estimated first, except that a job
  queued for ``LANDSCAPE_QUEUE_AGING_SECONDS`` or longer is *due* and goes ahead of every job
  that is not, due jobs oldest first. A long job thus waits at most the aging bound plus the
  run time of jobs already running or due before it, however many short jobs keep arriving.
  A job without an estimate counts as long (it is taken at once by an idle worker anyway).

The estimates model the deployment as it is. A CUDA worker process runs one job at a time
(its threads take turns on the device, ``api/worker.py``), so an express thread there could
never run beside the general one: a CUDA deployment has no express lane (its workers start
none) and is modelled as one general worker, where the shortest-first rule still puts a
short job first, behind only the job already running.

Seconds come from FLOPs (``api/planning/job_cost.py``) by ``Throughput``: a per-job overhead
and a FLOP rate measured from jobs that finished on this server (``Throughput.fit``), or until
enough have, a prior: ``LANDSCAPE_FLOPS_PER_SECOND`` when set, else the prior of the workers'
device class (``PRIOR_FLOPS_PER_SECOND``). ``schedule`` replays the rule over the queued jobs
from the running jobs' expected ends, giving each queued job its position (1: next to start),
estimated start and end.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from api.planning.common import compute_device
from api.settings import Settings
from landscape.errors import SpecError

Lane = Literal["express", "general"]
DeviceClass = Literal["cpu", "cuda"]

# FLOP rates assumed until jobs have finished here, by the workers' device class. CPU: what the
# zoo's small-batch training and evaluation reach on a 2-core Intel Xeon. CUDA: deliberately
# below what was measured for ResNet-56 on CIFAR-10 on one H200 (the engine's strict fp32 16
# TFLOP/s, tf32 compiled 52; the original tool's loop 6-8), as small-batch training and smaller
# GPUs run slower per FLOP: an estimate made with it errs long, and the measured rate replaces
# it after two jobs.
PRIOR_FLOPS_PER_SECOND: Mapping[DeviceClass, float] = MappingProxyType({"cpu": 3e9, "cuda": 1e13})

PRIOR_OVERHEAD_S = 10.0  # loading data, building the net, starting engine processes
MIN_SAMPLES = 2  # finished jobs needed before the measured overhead and rate replace the prior
MIN_WORK_S = 1.0  # a job counts towards the rate only for time beyond the overhead at least this


@dataclass(frozen=True)
class Throughput:
    """``seconds(flops) = overhead_s + flops / flops_per_second``; ``samples`` finished jobs
    measured it (0: the configured prior)."""

    overhead_s: float
    flops_per_second: float
    samples: int
    prior: str = "LANDSCAPE_FLOPS_PER_SECOND"  # where an assumed rate came from, in words

    def seconds(self, flops: float | None) -> float | None:
        work = self.work_seconds(flops)
        return None if work is None else self.overhead_s + work

    def work_seconds(self, flops: float | None) -> float | None:
        """The run time beyond the per-job overhead: what the lanes compare, so a slow start
        measured on a loaded box never pushes every small job out of the express lane."""
        return None if flops is None else flops / self.flops_per_second

    def waiting(self, job_id: str, created_at: float, flops: float | None) -> Waiting:
        return Waiting(job_id, created_at, self.seconds(flops), self.work_seconds(flops))

    @property
    def basis(self) -> str:
        """How the seconds were obtained, for people reading an estimate."""
        rate = f"{self.flops_per_second:.3g} FLOP/s + {self.overhead_s:.1f} s per job"
        if self.samples == 0:
            return f"assumed rate {rate} ({self.prior}; no job finished here yet)"
        return f"measured rate {rate}, from the last {self.samples} finished jobs on this server"

    @classmethod
    def fit(
        cls,
        finished: Iterable[tuple[float, float]],
        prior_rate: float,
        prior: str = "LANDSCAPE_FLOPS_PER_SECOND",
    ) -> Throughput:
        """From ``(estimated flops, seconds it ran)`` of finished jobs: the overhead is the
        shortest run (the smallest jobs are nearly all overhead), the rate the FLOPs per second
        of the time beyond it, among jobs that spent at least ``MIN_WORK_S`` beyond it."""
        runs = [(f, s) for f, s in finished if f >= 0 and s > 0 and math.isfinite(f + s)]
        if len(runs) < MIN_SAMPLES:
            return cls(PRIOR_OVERHEAD_S, prior_rate, 0, prior)
        overhead = min(s for _, s in runs)
        working = [(f, s - overhead) for f, s in runs if s - overhead >= MIN_WORK_S and f > 0]
        rate = sum(f for f, _ in working) / sum(s for _, s in working) if working else prior_rate
        return cls(overhead, rate, len(runs), prior)


@dataclass(frozen=True)
class QueuePolicy:
    """The rule's knobs, from the settings (defaults: ``api/settings.py``). The worker counts
    are the capacity the estimates assume: this process's (or, with none here, one general
    worker and the express lane of a ``landscape worker`` beside it); on CUDA one general
    worker and no express lane (the module docstring says why)."""

    aging_seconds: float = 1800.0
    express_max_seconds: float = 120.0
    prior_rate: float = PRIOR_FLOPS_PER_SECOND["cpu"]
    prior: str = "LANDSCAPE_FLOPS_PER_SECOND"
    general_workers: int = 1
    express_workers: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> QueuePolicy:
        device = device_class(settings)
        on_cuda = device == "cuda"
        if settings.flops_per_second is not None:
            rate, prior = settings.flops_per_second, "LANDSCAPE_FLOPS_PER_SECOND"
        else:
            rate = PRIOR_FLOPS_PER_SECOND[device]
            prior = f"the prior of a {device.upper()} worker; LANDSCAPE_FLOPS_PER_SECOND sets one"
        return cls(
            aging_seconds=settings.queue_aging_seconds,
            express_max_seconds=settings.express_max_seconds,
            prior_rate=rate,
            prior=prior,
            general_workers=1 if on_cuda else max(1, settings.workers),
            express_workers=0 if on_cuda else settings.express_workers,
        )

    def assumed(self) -> Throughput:
        """The prior alone, for an estimate made without the jobs table."""
        return Throughput.fit((), self.prior_rate, self.prior)


def device_class(settings: Settings) -> DeviceClass:
    """The class of the device the service's workers compute on (``compute_device``). CUDA
    asked for in a process without it counts as a CPU: its jobs fail, none computes there."""
    try:
        return "cuda" if compute_device(settings).type == "cuda" else "cpu"
    except SpecError:
        return "cpu"


@dataclass(frozen=True)
class Waiting:
    """A queued job as the rule sees it (times in UNIX seconds)."""

    id: str
    created_at: float
    seconds: float | None  # estimated run time; None: unknown
    work_s: float | None  # the part of it beyond the per-job overhead


def express_eligible(job: Waiting, express_max_seconds: float) -> bool:
    return job.work_s is not None and job.work_s <= express_max_seconds


def claim_order(
    jobs: Iterable[Waiting], lane: Lane, at: float, policy: QueuePolicy
) -> list[Waiting]:
    """The queued jobs a worker of ``lane`` may take at time ``at``, in the order it tries them."""
    if lane == "express":
        eligible = [j for j in jobs if express_eligible(j, policy.express_max_seconds)]
        return sorted(eligible, key=lambda j: (j.created_at, j.id))

    def key(job: Waiting) -> tuple[int, float, float, str]:
        if at - job.created_at >= policy.aging_seconds:
            return (0, job.created_at, 0.0, job.id)
        return (1, math.inf if job.work_s is None else job.work_s, job.created_at, job.id)

    return sorted(jobs, key=key)


@dataclass(frozen=True)
class Slot:
    """When a queued job is expected to run."""

    position: int  # 1: the next queued job to start
    start_at: float
    end_at: float | None  # None when its run time is unknown
    lane: Lane


def schedule(
    queued: Sequence[Waiting],
    busy_until: Sequence[tuple[Lane, float]],
    policy: QueuePolicy,
    at: float,
) -> dict[str, Slot]:
    """Replay the rule: each worker, as it becomes free, takes the first job its lane's order
    gives at that moment. ``busy_until`` is the expected end of each running job and the lane
    of the worker running it. A job of unknown length holds its worker for the aging bound
    (the only bound on it the queue has)."""
    free: list[tuple[float, int, Lane]] = []
    lanes: tuple[tuple[Lane, int], ...] = (
        ("express", policy.express_workers),
        ("general", policy.general_workers),
    )
    for lane, count in lanes:
        ends = sorted(t for job_lane, t in busy_until if job_lane == lane)
        for index in range(count):
            end = ends[index] if index < len(ends) else at
            heapq.heappush(free, (max(end, at), len(free), lane))
    left = list(queued)
    slots: dict[str, Slot] = {}
    while left and free:
        t, order, lane = heapq.heappop(free)
        candidates = claim_order(left, lane, t, policy)
        if not candidates:  # an express worker with nothing it may take: it stays idle
            continue
        job = candidates[0]
        left.remove(job)
        finish = t + job.seconds if job.seconds is not None else None
        slots[job.id] = Slot(len(slots) + 1, t, finish, lane)
        busy = finish if finish is not None else t + policy.aging_seconds
        heapq.heappush(free, (busy, order, lane))
    return slots
