"""The rate the service turns estimated FLOPs into seconds with: fitted to the jobs that
finished on this server, or the prior of its workers' device class until enough have
(``api/schedule.py``). One query for the queue's estimates and the refusals' times alike."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.db import Job
from api.schedule import QueuePolicy, Run, Throughput

RATE_SAMPLES = 200  # finished jobs the measured rates are fitted to (the newest)


def measured_throughput(session: Session, policy: QueuePolicy) -> Throughput:
    """Seconds per FLOP by job kind, fitted to the newest jobs that finished here in one run
    (a resumed job ran only its rest, so it would read as too fast)."""
    rows = session.execute(
        select(Job.kind, Job.cost_flops, Job.started_at, Job.finished_at)
        .where(
            Job.status == "done",
            Job.attempts == 1,
            Job.cost_flops.is_not(None),
            Job.started_at.is_not(None),
            Job.finished_at.is_not(None),
        )
        .order_by(Job.finished_at.desc())
        .limit(RATE_SAMPLES)
    ).all()
    runs = [
        Run(kind or "surface", flops, end - start)
        for kind, flops, start, end in rows
        if flops is not None and start is not None and end is not None
    ]
    return Throughput.fit(runs, policy.prior_rate, policy.prior, policy.priors)
