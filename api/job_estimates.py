"""Queue estimates: where each active job stands and when it is expected to start and end,
from the rate the estimates use (``api/planning/rate.py``) and the fair-queue rule replayed
over the queued jobs (``api/schedule.py``)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from api.db import Job
from api.job_wire import iso
from api.schedule import Lane, QueuePolicy, Throughput, schedule
from api.schemas.common import JobEstimate
from api.worker_ids import worker_lane


def replay_estimates(
    active: Iterable[Job],
    rate: Throughput,
    policy: QueuePolicy,
    t: float,
    hypothetical: Mapping[str, float | None],
    kinds: Mapping[str, str] | None = None,
) -> dict[str, JobEstimate]:
    """Every active job's estimate at time ``t``, at its kind's rate: the running jobs'
    expected ends, then the rule replayed over the queued ones, with the ``hypothetical`` jobs
    (id → FLOPs, of the kinds ``kinds`` names) queued now as well."""
    active = list(active)
    busy: list[tuple[Lane, float]] = []
    out: dict[str, JobEstimate] = {}
    for job in active:
        if job.status != "running":
            continue
        kind = job.kind or "surface"
        seconds = rate.seconds(job.cost_flops, kind)
        end = expected_end(job, seconds, t, policy.aging_seconds)
        lane = worker_lane(job.worker_id)
        busy.append((lane, end))
        out[job.id] = queue_estimate(job.cost_flops, rate, job.started_at or t, end, lane, kind)
    flops = {
        job.id: job.cost_flops
        for job in active
        if job.status == "queued" and not job.cancel_requested
    }
    flops.update(hypothetical)
    created = {job.id: job.created_at for job in active}
    kind_of = {job.id: job.kind or "surface" for job in active} | dict(kinds or {})
    queued = [rate.waiting(i, created.get(i, t), f, kind_of.get(i)) for i, f in flops.items()]
    for job_id, slot in schedule(queued, busy, policy, t).items():
        estimate = queue_estimate(
            flops[job_id], rate, slot.start_at, slot.end_at, slot.lane, kind_of.get(job_id)
        )
        out[job_id] = estimate.model_copy(update={"position": slot.position})
    return out


def expected_end(job: Job, seconds: float | None, t: float, unknown_s: float) -> float:
    """A running job's expected end: from its own reported ETA when it has one, else from its
    estimated run time (unknown: the aging bound); never before ``t``. Whole seconds, so an
    event stream does not see a new estimate on every poll."""
    if job.eta_seconds is not None:
        end = job.updated_at + job.eta_seconds
    else:
        end = (job.started_at or t) + (seconds if seconds is not None else unknown_s)
    return float(math.ceil(max(end, t)))


def queue_estimate(
    flops: float | None,
    rate: Throughput,
    start: float,
    end: float | None,
    lane: Lane,
    kind: str | None = None,
) -> JobEstimate:
    seconds = rate.seconds(flops, kind)
    return JobEstimate(
        flops=flops,
        seconds=None if seconds is None else round(seconds, 1),
        start_at=iso(round(start)),
        end_at=iso(round(end)) if end is not None else None,
        lane=lane,
        basis=rate.basis_for(kind),
    )
