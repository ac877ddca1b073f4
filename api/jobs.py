"""The job queue on top of the ``jobs`` table: submit (with dedup), claim, progress, finish.

Every state change is a compare-and-set UPDATE (``WHERE id = … AND status = …``) in one
transaction, so two workers — threads, processes or hosts sharing one database — never take the
same job: the loser's UPDATE matches no row. A claim is a lease that the running worker renews;
a lapsed lease means the worker died and the job may be taken over (it resumes from its
partial HDF5 file). A job whose cancel was asked for is never taken over or requeued: a
worker that finds it so (its own died, or it was queued again on shutdown) marks it cancelled.

Which queued job a worker takes, and when each queued job is expected to start, follow the
fair-queue rule of ``api/schedule.py``: an express lane for short jobs, shortest-first with an
aging bound for the rest, by the FLOPs each job is estimated at when it is queued. The wire
shape of a job and its estimate are ``api/job_wire.py``; worker ids ``api/worker_ids.py``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from fastapi import HTTPException
from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from api.db import ACTIVE, TERMINAL, Job, SurfaceRecord, now
from api.job_estimates import replay_estimates
from api.job_wire import job_public
from api.planning.job_cost import job_flops
from api.planning.rate import measured_throughput
from api.planning.surface import Plan
from api.runners.base import JobKind
from api.schedule import Lane, QueuePolicy, Throughput, claim_order
from api.schemas.common import JobEstimate, JobPublic
from api.worker_ids import worker_is_dead

log = logging.getLogger(__name__)

# How long a request for an id waits while that id's job winds down after a cancel: a running
# job sees the cancel at its next heartbeat (at most 2 s) and stops at its next chunk.
STOPPING_WAIT_SECONDS = 10.0

submitted_by: ContextVar[str | None] = ContextVar("landscape_submitted_by", default=None)
"""The client a request's new jobs count against (``api/quota.py``, ``Job.client``): set by the
request guard around a submission's route, so every route that queues a job records it."""


class JobQueue:
    """Queue operations; each method is one short transaction on its own session."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        lease_seconds: float,
        policy: QueuePolicy | None = None,
        stopping_wait_seconds: float = STOPPING_WAIT_SECONDS,
    ) -> None:
        self.sessions = sessions
        self.lease_seconds = lease_seconds
        self.policy = policy or QueuePolicy()
        self.stopping_wait_seconds = stopping_wait_seconds

    # --- API side -------------------------------------------------------------------------
    def submit(self, plan: Plan, request: dict[str, Any]) -> tuple[Job, bool]:
        """The active job for this surface, or a new queued one; ``True`` when new."""
        stored = plan.to_json()
        for _ in range(3):
            self._wait_while_stopping(plan.surface_id)
            with self.sessions() as session:
                existing = self._active_for(session, plan.surface_id)
                if existing is not None:
                    return existing, False
                if session.get(SurfaceRecord, plan.surface_id) is None:
                    session.add(
                        SurfaceRecord(
                            id=plan.surface_id,
                            label=plan.label,
                            model=plan.model,
                            dataset=plan.dataset,
                            checkpoint_id=plan.checkpoint_id,
                            request=request,
                        )
                    )
                job = Job(
                    id=uuid.uuid4().hex,
                    kind="surface",
                    surface_id=plan.surface_id,
                    label=plan.label,
                    request=request,
                    plan=stored,
                    cost_flops=job_flops(JobKind.SURFACE.value, stored, session),
                    total=plan.surface_spec.grid.n_points,
                    client=submitted_by.get(),
                )
                session.add(job)
                try:
                    session.commit()
                except IntegrityError:  # an identical request won the race: share its job
                    session.rollback()
                    continue
                return job, True
        raise RuntimeError("could not submit or find the job after 3 tries")  # pragma: no cover

    def submit_analysis(
        self,
        kind: str,
        surface_id: str,
        label: str,
        request: dict[str, Any],
        total: int,
        plan: dict[str, Any],
    ) -> tuple[Job, bool]:
        """A new queued ``kind`` job for a finished surface (or a report), or the active job
        of that id (``False``: the caller decides whether it is the same analysis or a
        conflict)."""
        for _ in range(3):
            self._wait_while_stopping(surface_id)
            with self.sessions() as session:
                existing = self._active_for(session, surface_id)
                if existing is not None:
                    return existing, False
                job = Job(
                    id=uuid.uuid4().hex,
                    kind=kind,
                    surface_id=surface_id,
                    label=label,
                    request=request,
                    plan=plan,
                    cost_flops=job_flops(kind, plan, session),
                    total=total,
                    client=submitted_by.get(),
                )
                session.add(job)
                try:
                    session.commit()
                except IntegrityError:  # another request for this surface won the race
                    session.rollback()
                    continue
                return job, True
        raise RuntimeError("could not submit or find the job after 3 tries")  # pragma: no cover

    def _wait_while_stopping(self, surface_id: str) -> None:
        """Wait (up to ``stopping_wait_seconds``) while the id's active job winds down after a
        cancel, else 409: a request handed to that job would end cancelled with it."""
        deadline = time.monotonic() + self.stopping_wait_seconds
        while True:
            job = self.active_for(surface_id)
            if job is None or not job.cancel_requested:
                return
            if time.monotonic() >= deadline:
                raise HTTPException(
                    409,
                    f"job {job.id} for this id is still stopping after a cancel; request it "
                    "again in a few seconds",
                    headers={"Retry-After": "5"},
                )
            time.sleep(0.1)

    @staticmethod
    def _active_for(session: Session, surface_id: str) -> Job | None:
        return session.scalars(
            select(Job).where(Job.surface_id == surface_id, Job.status.in_(ACTIVE))
        ).first()

    def active_of_kind(self, kind: str) -> list[Job]:
        """Queued and running jobs of one kind, oldest first."""
        with self.sessions() as session:
            query = select(Job).where(Job.kind == kind, Job.status.in_(ACTIVE))
            return list(session.scalars(query.order_by(Job.created_at)))

    def active_for(self, surface_id: str) -> Job | None:
        with self.sessions() as session:
            return self._active_for(session, surface_id)

    def latest_for(self, surface_id: str, kind: str = "surface") -> Job | None:
        """The newest job of ``kind`` for a surface (NULL kind: a job from before analyses)."""
        wanted = Job.kind == kind
        if kind == "surface":
            wanted = wanted | Job.kind.is_(None)
        with self.sessions() as session:
            return session.scalars(
                select(Job)
                .where(Job.surface_id == surface_id, wanted)
                .order_by(Job.created_at.desc())
            ).first()

    def get(self, job_id: str) -> Job | None:
        with self.sessions() as session:
            return session.get(Job, job_id)

    def list(self, limit: int = 500) -> list[Job]:
        with self.sessions() as session:
            return list(session.scalars(select(Job).order_by(Job.created_at.desc()).limit(limit)))

    def active_count(self, client: str | None = None) -> int:
        """Queued + running jobs, all of them or those ``client`` queued (the queue limits,
        ``api/quota.py``): every job counts as one, a report too."""
        query = select(func.count()).select_from(Job).where(Job.status.in_(ACTIVE))
        if client is not None:
            query = query.where(Job.client == client)
        with self.sessions() as session:
            return int(session.scalar(query) or 0)

    def counts(self) -> dict[str, int]:
        with self.sessions() as session:
            rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        found = {status: int(count) for status, count in rows}
        return {status: found.get(status, 0) for status in (*ACTIVE, *TERMINAL)}

    def cancel(self, job_id: str, wait_seconds: float = 0.0) -> Job | None:
        """Cancel a queued job at once; ask a running one to stop and wait for it a while."""
        with self.sessions() as session, session.begin():
            t = now()
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "queued")
                .values(
                    status="cancelled",
                    stage="finished",
                    finished_at=t,
                    updated_at=t,
                    cancel_requested=True,
                )
            )
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "running")
                .values(cancel_requested=True, updated_at=t)
            )
        deadline = time.monotonic() + wait_seconds
        job = self.get(job_id)
        while job is not None and job.status == "running" and time.monotonic() < deadline:
            time.sleep(0.1)
            job = self.get(job_id)
        return job

    # --- worker side ----------------------------------------------------------------------
    def claim(self, worker_id: str, lane: Lane = "general") -> Job | None:
        """Take the next job of ``lane`` by the fair-queue rule (``api/schedule.py``), a job
        whose worker's lease lapsed first (it ran already), or None. A waiting or lapsed job
        whose cancel was asked for is marked cancelled instead."""
        t = now()
        waiting = (Job.status == "queued") | (
            (Job.status == "running") & (Job.lease_expires_at < t)
        )
        claimable = waiting & ~Job.cancel_requested
        with self.sessions() as session:
            rows = session.execute(
                select(
                    Job.id,
                    Job.status,
                    Job.created_at,
                    Job.cost_flops,
                    Job.cancel_requested,
                    Job.kind,
                ).where(waiting)
            ).all()
        for row in rows:
            if row.cancel_requested:
                self._settle_cancelled(row.id, waiting)
        rows = [row for row in rows if not row.cancel_requested]
        if not rows:
            return None
        rate = self.throughput()
        by_id = {
            row.id: rate.waiting(row.id, row.created_at, row.cost_flops, row.kind or "surface")
            for row in rows
        }
        lapsed = {row.id for row in rows if row.status == "running"}
        ordered = claim_order(by_id.values(), lane, t, self.policy)
        ordered.sort(key=lambda job: job.id not in lapsed)  # stable: the rule's order otherwise
        for candidate in ordered:
            job_id = candidate.id
            with self.sessions() as session, session.begin():
                result = session.execute(
                    update(Job)
                    .where(Job.id == job_id, claimable)
                    .values(
                        status="running",
                        worker_id=worker_id,
                        lease_expires_at=now() + self.lease_seconds,
                        attempts=Job.attempts + 1,
                        updated_at=now(),
                        started_at=now(),
                        error=None,
                    )
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    job = session.get(Job, job_id)
                    assert job is not None and job.worker_id == worker_id
                    log.info("worker %s (%s lane) claimed job %s", worker_id, lane, job_id)
                    return job
        return None

    def _settle_cancelled(self, job_id: str, where: ColumnElement[bool]) -> bool:
        """Mark a job that nobody runs (``where`` still holds) but whose cancel was asked for as
        cancelled; True when it was."""
        t = now()
        with self.sessions() as session, session.begin():
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.cancel_requested, where)
                .values(
                    status="cancelled",
                    stage="finished",
                    finished_at=t,
                    updated_at=t,
                    worker_id=None,
                    lease_expires_at=None,
                    eta_seconds=None,
                )
            )
            settled = bool(result.rowcount)  # type: ignore[attr-defined]
        if settled:
            log.info("job %s: cancelled while no worker ran it; marked cancelled", job_id)
        return settled

    # --- estimates ------------------------------------------------------------------------
    def throughput(self) -> Throughput:
        """The rate estimates use: measured here, else the prior (``api/planning/rate.py``)."""
        with self.sessions() as session:
            return measured_throughput(session, self.policy)

    def estimates(
        self,
        hypothetical: Mapping[str, float | None] | None = None,
        kinds: Mapping[str, str] | None = None,
    ) -> dict[str, JobEstimate]:
        """Every active job's estimate: the running jobs' expected ends, then the rule replayed
        over the queued ones (``api/schedule.py``); with ``hypothetical`` jobs (id → FLOPs, of
        the kinds ``kinds`` names) queued now as well, for an estimate before anything is
        queued."""
        t = now()
        rate = self.throughput()
        with self.sessions() as session:
            active = list(session.scalars(select(Job).where(Job.status.in_(ACTIVE))))
        return replay_estimates(active, rate, self.policy, t, hypothetical or {}, kinds or {})

    def public(self, job: Job) -> JobPublic:
        """``job_public`` with the job's queue estimate when it is active."""
        estimate = self.estimates().get(job.id) if job.status in ACTIVE else None
        return job_public(job, estimate)

    def _update_mine(self, job_id: str, owner: str, **values: Any) -> bool:
        """Change a job only while ``owner`` still holds it (a lost lease changes nothing)."""
        with self.sessions() as session, session.begin():
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.worker_id == owner, Job.status == "running")
                .values(updated_at=now(), **values)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def heartbeat(self, job_id: str, worker_id: str) -> tuple[bool, bool]:
        """Renew the lease; returns ``(still ours, cancel requested)``."""
        with self.sessions() as session, session.begin():
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")
                .values(lease_expires_at=now() + self.lease_seconds)
            )
            ours = bool(result.rowcount)  # type: ignore[attr-defined]
            cancel = session.scalar(select(Job.cancel_requested).where(Job.id == job_id))
        return ours, bool(cancel)

    def set_progress(
        self,
        job_id: str,
        worker_id: str,
        *,
        stage: str,
        done: int | None = None,
        total: int | None = None,
        eta: float | None = None,
        train: dict[str, Any] | None = None,
    ) -> bool:
        """Store what the worker reports; ``None`` leaves that field as it was."""
        values: dict[str, Any] = {"stage": stage, "eta_seconds": eta}
        if done is not None:
            values["done"] = done
        if total is not None:
            values["total"] = total
        if train is not None:
            values["train_progress"] = train
        return self._update_mine(job_id, worker_id, **values)

    def finish(self, job_id: str, worker_id: str, status: str, error: str | None = None) -> None:
        assert status in TERMINAL, status
        self._update_mine(
            job_id,
            worker_id,
            status=status,
            stage="finished",
            error=error,
            finished_at=now(),
            eta_seconds=None,
            lease_expires_at=None,
        )

    def release(self, job_id: str, worker_id: str) -> None:
        """Back to the queue (shutdown): the next worker resumes from the partial file."""
        self._update_mine(
            job_id,
            worker_id,
            status="queued",
            stage="queued",
            worker_id=None,
            lease_expires_at=None,
            eta_seconds=None,
        )

    def recover(self, live_here: set[str]) -> int:
        """Requeue jobs whose worker died on this host (no need to wait for its lease), or mark
        them cancelled when their cancel was asked for (requeued, they would never run)."""
        with self.sessions() as session:
            running = session.execute(
                select(Job.id, Job.worker_id).where(Job.status == "running")
            ).all()
        count = 0
        for job_id, worker_id in running:
            if not worker_id or not worker_is_dead(worker_id, live_here):
                continue
            held = (Job.worker_id == worker_id) & (Job.status == "running")
            if self._settle_cancelled(job_id, held):
                continue
            with self.sessions() as session, session.begin():
                result = session.execute(
                    update(Job)
                    .where(Job.id == job_id, held)
                    .values(
                        status="queued",
                        stage="queued",
                        worker_id=None,
                        lease_expires_at=None,
                        updated_at=now(),
                    )
                )
                count += int(result.rowcount)  # type: ignore[attr-defined]
        if count:
            log.info("requeued %d job(s) left running by a dead process", count)
        return count
