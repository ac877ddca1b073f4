"""The fair queue: which queued job a worker takes next, and when each queued job will start.

The rule (docs/deploy.md, "The queue"):

- **Express lane.** Express workers (``LANDSCAPE_EXPRESS_WORKERS``, one by default) take only
  jobs whose estimated work (run time beyond the per-job overhead) is at most
  ``LANDSCAPE_EXPRESS_MAX_SECONDS``, oldest first. A small
  interactive job therefore starts within a poll even while every other worker is busy for an
  hour with demo or report jobs. An express job that overruns (it has run
  ``EXPRESS_OVERRUN`` times the cut-off: an estimate gone wrong) is
  stopped at its next chunk and handed to the general lane with its estimate raised
  (``api/worker.py``), so a wrong estimate never holds the lane for long.
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

Seconds come from FLOPs (``api/planning/job_cost.py``) by ``Throughput``, one rate per job kind
(``seconds = overhead + FLOPs / rate``): a Hessian-vector product or a training step does not
run at an evaluation's FLOP rate, and a recurrent net's or a tiny net's per-operation cost is
not in its FLOPs. Each kind's prior is the device class's rate (``LANDSCAPE_FLOPS_PER_SECOND``
when set, else ``PRIOR_FLOPS_PER_SECOND``) times that kind's relative speed, plus its own
overhead, both calibrated with ``bench/estimates.py`` on a CPU (docs/performance.md, "Job-time
estimates"). ``Throughput.fit`` then corrects the priors from the jobs that finished here,
robustly: a job predicted to be mostly overhead informs only the overhead, never the rate;
each correction is the median of the newest jobs' ratios (one job is never enough, and one
outlier moves nothing), per kind once a kind has ``MIN_SAMPLES`` jobs, else pooled; and every
correction stays within fixed bounds of the prior. ``schedule`` replays the rule over the
queued jobs from the running jobs' expected ends, giving each queued job its position (1: next
to start), estimated start and end.
"""

from __future__ import annotations

import heapq
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from api.planning.common import compute_device
from api.settings import Settings
from landscape.errors import SpecError

Lane = Literal["express", "general"]
DeviceClass = Literal["cpu", "cuda"]

# The reference FLOP rate of each device class. CPU: a 2-core server CPU's evaluation of the
# zoo's small nets. CUDA: deliberately below what was measured for ResNet-56 on CIFAR-10 on
# one H200 (the engine's strict fp32 16 TFLOP/s, tf32 compiled 52; the original tool's loop
# 6-8), as small-batch training and smaller GPUs run slower per FLOP: an estimate made with it
# errs long, and the measured rates replace it once jobs have finished.
PRIOR_FLOPS_PER_SECOND: Mapping[DeviceClass, float] = MappingProxyType({"cpu": 3e9, "cuda": 1e13})
PRIOR_OVERHEAD_S = 10.0  # a job of a kind without its own prior: loading data, building nets


@dataclass(frozen=True)
class KindPrior:
    """A job kind's rate relative to the device class's (``speed``) and its per-job overhead
    (loading data, building nets, starting engine processes, writing results)."""

    speed: float
    overhead_s: float


# Calibrated with bench/estimates.py on a 2-core AMD EPYC (docs/performance.md). On CUDA, not
# calibrated: every kind at the device's rate (UNCALIBRATED), with the same overheads.
KIND_PRIORS: Mapping[str, KindPrior] = MappingProxyType(
    {
        "surface": KindPrior(2.0, 12.0),
        "hessian": KindPrior(0.65, 3.0),
        "gradient_flow": KindPrior(4.0, 0.5),
        "sharpness": KindPrior(6.0, 2.0),
        "report": KindPrior(3.0, 8.0),
    }
)
UNCALIBRATED: Mapping[str, KindPrior] = MappingProxyType(
    {kind: KindPrior(1.0, p.overhead_s) for kind, p in KIND_PRIORS.items()}
)
DEFAULT_PRIOR = KindPrior(1.0, PRIOR_OVERHEAD_S)

# An express job that has run this many times the cut-off leaves the lane (api/worker.py); the
# chunk then in flight ends it well before twice the cut-off.
EXPRESS_OVERRUN = 1.5

MIN_SAMPLES = 3  # finished jobs a correction needs (fewer: the prior, or the pooled one)
WINDOW = 20  # the newest jobs of a kind its correction is the median of
TRIVIAL_SHARE = 0.25  # predicted work under this share of the overhead: an overhead sample
MIN_WORK_SHARE = 0.25  # the least share of a run counted as its work (the rest: overhead)
RATE_BOUND = 30.0  # the pooled rate stays within this factor of the prior
KIND_BOUND = 4.0  # a kind's own rate stays within this factor of the pooled one
OVERHEAD_BOUND = 4.0  # the overheads stay within this factor of their priors


@dataclass(frozen=True)
class Run:
    """A job that finished here in one go: its kind, estimated FLOPs and seconds it ran."""

    kind: str
    flops: float
    seconds: float


@dataclass(frozen=True)
class KindRate:
    """``seconds(flops) = overhead_s + flops / flops_per_second`` for one kind; ``samples``:
    this kind's finished jobs that measured its rate (0: the prior, or the pooled one)."""

    overhead_s: float
    flops_per_second: float
    samples: int = 0


@dataclass(frozen=True)
class Throughput:
    """The rates estimates use: ``kinds`` by job kind, the top-level fields for a job of a
    kind without its own; ``samples`` finished jobs measured them (0: the priors)."""

    overhead_s: float
    flops_per_second: float
    samples: int
    prior: str = "LANDSCAPE_FLOPS_PER_SECOND"  # where an assumed rate came from, in words
    kinds: Mapping[str, KindRate] = field(default_factory=lambda: MappingProxyType({}))

    def rate(self, kind: str | None) -> KindRate:
        own = self.kinds.get(kind) if kind is not None else None
        return own or KindRate(self.overhead_s, self.flops_per_second)

    def seconds(self, flops: float | None, kind: str | None = None) -> float | None:
        work = self.work_seconds(flops, kind)
        return None if work is None else self.rate(kind).overhead_s + work

    def work_seconds(self, flops: float | None, kind: str | None = None) -> float | None:
        """The run time beyond the per-job overhead: what the lanes compare, so a slow start
        measured on a loaded box never pushes every small job out of the express lane."""
        return None if flops is None else flops / self.rate(kind).flops_per_second

    def waiting(
        self, job_id: str, created_at: float, flops: float | None, kind: str | None = None
    ) -> Waiting:
        return Waiting(
            job_id, created_at, self.seconds(flops, kind), self.work_seconds(flops, kind)
        )

    @property
    def basis(self) -> str:
        return self.basis_for(None)

    def basis_for(self, kind: str | None) -> str:
        """How a ``kind`` job's seconds were obtained, for people reading an estimate."""
        rate = self.rate(kind)
        job = f"{kind.replace('_', ' ')} job" if kind is not None and kind in self.kinds else "job"
        text = f"{rate.flops_per_second:.3g} FLOP/s + {rate.overhead_s:.1f} s per {job}"
        if self.samples == 0:
            return f"assumed rate {text} ({self.prior}; no job finished here yet)"
        return f"measured rate {text}, from the last {self.samples} finished jobs on this server"

    @classmethod
    def fit(
        cls,
        finished: Iterable[Run],
        prior_rate: float,
        prior: str = "LANDSCAPE_FLOPS_PER_SECOND",
        priors: Mapping[str, KindPrior] = KIND_PRIORS,
    ) -> Throughput:
        """The priors (``prior_rate`` times each kind's speed, its overhead) corrected by the
        finished jobs, newest first: the overheads by the median of what the jobs predicted to
        be mostly overhead took over their prediction; the rates by the median of the others'
        work (their time beyond the overhead) over their predicted work, pooled over every
        kind and per kind; each correction bounded."""
        runs = [
            r
            for r in finished
            if r.flops >= 0 and r.seconds > 0 and math.isfinite(r.flops + r.seconds)
        ]

        def base(kind: str) -> KindPrior:
            return priors.get(kind, DEFAULT_PRIOR)

        def predicted(run: Run) -> float:
            return run.flops / (prior_rate * base(run.kind).speed)

        def trivial(run: Run) -> bool:
            return predicted(run) < TRIVIAL_SHARE * base(run.kind).overhead_s

        starts = [r.seconds / (base(r.kind).overhead_s + predicted(r)) for r in runs if trivial(r)]
        overhead = _bounded(_median(starts[:WINDOW]), OVERHEAD_BOUND)

        def slowness(run: Run) -> float:
            work = max(
                run.seconds - overhead * base(run.kind).overhead_s, MIN_WORK_SHARE * run.seconds
            )
            return work / predicted(run)

        working = [(r.kind, slowness(r)) for r in runs if not trivial(r)]
        pooled = _bounded(_median([s for _, s in working][: WINDOW * len(priors)]), RATE_BOUND)
        kinds: dict[str, KindRate] = {}
        for kind in sorted(set(priors) | {r.kind for r in runs}):
            own = [s for k, s in working if k == kind][:WINDOW]
            found = _median(own)
            slow = pooled * _bounded(None if found is None else found / pooled, KIND_BOUND)
            kinds[kind] = KindRate(
                overhead * base(kind).overhead_s,
                prior_rate * base(kind).speed / slow,
                len(own) if found is not None else 0,
            )
        return cls(
            overhead * DEFAULT_PRIOR.overhead_s,
            prior_rate * DEFAULT_PRIOR.speed / pooled,
            len(runs),
            prior,
            MappingProxyType(kinds),
        )


def _median(values: Sequence[float]) -> float | None:
    """The median of at least ``MIN_SAMPLES`` values, else None (too few to correct by)."""
    return statistics.median(values) if len(values) >= MIN_SAMPLES else None


def _bounded(factor: float | None, bound: float) -> float:
    """A correction factor within ``[1/bound, bound]``; None (no correction) is 1."""
    return 1.0 if factor is None else min(bound, max(1.0 / bound, factor))


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
    priors: Mapping[str, KindPrior] = field(default_factory=lambda: KIND_PRIORS)
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
            priors=KIND_PRIORS if device == "cpu" else UNCALIBRATED,
            general_workers=1 if on_cuda else max(1, settings.workers),
            express_workers=0 if on_cuda else settings.express_workers,
        )

    def assumed(self) -> Throughput:
        """The prior alone, for an estimate made without the jobs table."""
        return Throughput.fit((), self.prior_rate, self.prior, self.priors)


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
