"""The job queue on top of the ``jobs`` table: submit (with dedup), claim, progress, finish.

Every state change is a compare-and-set UPDATE (``WHERE id = … AND status = …``) in one
transaction, so two workers — threads, processes or hosts sharing one database — never take the
same job: the loser's UPDATE matches no row. A claim is a lease that the running worker renews;
a lapsed lease means the worker died and the job may be taken over (it resumes from its
partial HDF5 file).

Which queued job a worker takes, and when each queued job is expected to start, follow the
fair-queue rule of ``api/schedule.py``: an express lane for short jobs, shortest-first with an
aging bound for the rest, by the FLOPs each job is estimated at when it is queued.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from api.db import ACTIVE, TERMINAL, Job, SurfaceRecord, now
from api.planning.job_cost import job_flops
from api.planning.rate import measured_throughput
from api.planning.surface import Plan
from api.redact import public_stored_error
from api.runners.base import JobKind
from api.schedule import Lane, QueuePolicy, Throughput, claim_order, schedule
from api.schemas.common import JobEstimate, JobPublic, Progress, TrainProgress

log = logging.getLogger(__name__)

_HOST = socket.gethostname()
_EXPRESS = "-express"  # ends the id of an express-lane worker, so estimates know its lane


def new_worker_id(lane: Lane = "general") -> str:
    """``host:pid:random``: lets a restarted server on the same host spot its dead workers."""
    suffix = _EXPRESS if lane == "express" else ""
    return f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}{suffix}"


def worker_lane(worker_id: str | None) -> Lane:
    return "express" if worker_id and worker_id.endswith(_EXPRESS) else "general"


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat()


def job_public(job: Job, estimate: JobEstimate | None = None) -> JobPublic:
    """The wire shape; ``estimate`` from ``JobQueue.estimates`` (routes that have it)."""
    return JobPublic(
        id=job.id,
        kind=job.kind or "surface",
        status=job.status,
        **_stage(job.stage),
        progress=Progress(done=job.done, total=job.total),
        train=TrainProgress(**job.train_progress) if job.train_progress else None,
        eta_seconds=job.eta_seconds,
        error=public_stored_error(job.error),
        surface_id=job.surface_id,
        label=job.label,
        cancel_requested=job.cancel_requested,
        request=job.request,
        created_at=iso(job.created_at) or "",
        started_at=iso(job.started_at),
        finished_at=iso(job.finished_at),
        estimate=estimate,
    )


def _stage(stored: str) -> dict[str, str | None]:
    """The stored stage as the wire has it: ``estimate:k/K`` (api/runners/surface.py) is
    stage ``estimating`` with its words."""
    if stored.startswith("estimate:"):
        k, _, total = stored.removeprefix("estimate:").partition("/")
        return {"stage": "estimating", "stage_detail": f"estimate stage {k} of {total}"}
    if stored == "exact":
        return {"stage": "exact", "stage_detail": "exact: every point to all samples"}
    return {"stage": stored, "stage_detail": None}


def _worker_is_dead(worker_id: str, live_here: set[str]) -> bool:
    """True when ``worker_id`` ran on this host in a process that no longer exists."""
    host, _, rest = worker_id.partition(":")
    pid_text = rest.partition(":")[0]
    if host != _HOST or not pid_text.isdigit() or worker_id in live_here:
        return False
    pid = int(pid_text)
    if pid == os.getpid():  # our pid, but not one of our workers: a previous life (containers)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class JobQueue:
    """Queue operations; each method is one short transaction on its own session."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        lease_seconds: float,
        policy: QueuePolicy | None = None,
    ) -> None:
        self.sessions = sessions
        self.lease_seconds = lease_seconds
        self.policy = policy or QueuePolicy()

    # --- API side -------------------------------------------------------------------------
    def submit(self, plan: Plan, request: dict[str, Any]) -> tuple[Job, bool]:
        """The active job for this surface, or a new queued one; ``True`` when new."""
        stored = plan.to_json()
        for _ in range(3):
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
        admit: Callable[[], None] | None = None,
    ) -> tuple[Job, bool]:
        """A new queued ``kind`` job for a finished surface (or a report), or the active job
        of that id (``False``: the caller decides whether it is the same analysis or a
        conflict). ``admit`` runs only before a new job is stored, so a request sharing an
        active job is never refused by it (``Quota.admit`` raises 429)."""
        for _ in range(3):
            with self.sessions() as session:
                existing = self._active_for(session, surface_id)
                if existing is not None:
                    return existing, False
                if admit is not None:
                    admit()
                job = Job(
                    id=uuid.uuid4().hex,
                    kind=kind,
                    surface_id=surface_id,
                    label=label,
                    request=request,
                    plan=plan,
                    cost_flops=job_flops(kind, plan, session),
                    total=total,
                )
                session.add(job)
                try:
                    session.commit()
                except IntegrityError:  # another request for this surface won the race
                    session.rollback()
                    continue
                return job, True
        raise RuntimeError("could not submit or find the job after 3 tries")  # pragma: no cover

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

    def active_load(self, job_ids: Collection[str] | None = None) -> int:
        """Queued + running jobs, all of them or those among ``job_ids``, each counted as the
        jobs it runs (the queue limits, ``api/quota.py``): a report as its progress total (its
        trainings, surfaces and per-net analyses, known when it is planned), any other kind
        as one."""
        if job_ids is not None and not job_ids:
            return 0
        weight = case((Job.kind == JobKind.REPORT.value, Job.total), else_=1)
        query = select(func.coalesce(func.sum(weight), 0)).where(Job.status.in_(ACTIVE))
        if job_ids is not None:
            query = query.where(Job.id.in_(list(job_ids)))
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
        whose worker's lease lapsed first (it ran already), or None."""
        t = now()
        claimable = ((Job.status == "queued") & ~Job.cancel_requested) | (
            (Job.status == "running") & (Job.lease_expires_at < t)
        )
        with self.sessions() as session:
            rows = session.execute(
                select(Job.id, Job.status, Job.created_at, Job.cost_flops).where(claimable)
            ).all()
        if not rows:
            return None
        rate = self.throughput()
        waiting = {row.id: rate.waiting(row.id, row.created_at, row.cost_flops) for row in rows}
        lapsed = {row.id for row in rows if row.status == "running"}
        ordered = claim_order(waiting.values(), lane, t, self.policy)
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

    # --- estimates ------------------------------------------------------------------------
    def throughput(self) -> Throughput:
        """The rate estimates use: measured here, else the prior (``api/planning/rate.py``)."""
        with self.sessions() as session:
            return measured_throughput(session, self.policy)

    def estimates(
        self, hypothetical: Mapping[str, float | None] | None = None
    ) -> dict[str, JobEstimate]:
        """Every active job's estimate: the running jobs' expected ends, then the rule replayed
        over the queued ones (``api/schedule.py``); with ``hypothetical`` jobs (id → FLOPs)
        queued now as well, for an estimate before anything is queued."""
        t = now()
        rate = self.throughput()
        with self.sessions() as session:
            active = list(session.scalars(select(Job).where(Job.status.in_(ACTIVE))))
        busy: list[tuple[Lane, float]] = []
        out: dict[str, JobEstimate] = {}
        for job in active:
            if job.status != "running":
                continue
            seconds = rate.seconds(job.cost_flops)
            end = _expected_end(job, seconds, t, self.policy.aging_seconds)
            lane = worker_lane(job.worker_id)
            busy.append((lane, end))
            out[job.id] = _estimate(job.cost_flops, rate, job.started_at or t, end, lane)
        extra = dict(hypothetical or {})
        flops = {
            job.id: job.cost_flops
            for job in active
            if job.status == "queued" and not job.cancel_requested
        }
        created = {job.id: job.created_at for job in active}
        queued = [rate.waiting(i, created.get(i, t), f) for i, f in {**flops, **extra}.items()]
        for job_id, slot in schedule(queued, busy, self.policy, t).items():
            estimate = _estimate(
                {**flops, **extra}[job_id], rate, slot.start_at, slot.end_at, slot.lane
            )
            out[job_id] = estimate.model_copy(update={"position": slot.position})
        return out

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
        """Requeue jobs whose worker died on this host (no need to wait for its lease)."""
        with self.sessions() as session:
            running = session.execute(
                select(Job.id, Job.worker_id).where(Job.status == "running")
            ).all()
        count = 0
        for job_id, worker_id in running:
            if worker_id and _worker_is_dead(worker_id, live_here):
                with self.sessions() as session, session.begin():
                    result = session.execute(
                        update(Job)
                        .where(Job.id == job_id, Job.worker_id == worker_id)
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


def _expected_end(job: Job, seconds: float | None, t: float, unknown_s: float) -> float:
    """A running job's expected end: from its own reported ETA when it has one, else from its
    estimated run time (unknown: the aging bound); never before ``t``. Whole seconds, so an
    event stream does not see a new estimate on every poll."""
    if job.eta_seconds is not None:
        end = job.updated_at + job.eta_seconds
    else:
        end = (job.started_at or t) + (seconds if seconds is not None else unknown_s)
    return float(math.ceil(max(end, t)))


def _estimate(
    flops: float | None, rate: Throughput, start: float, end: float | None, lane: Lane
) -> JobEstimate:
    seconds = rate.seconds(flops)
    return JobEstimate(
        flops=flops,
        seconds=None if seconds is None else round(seconds, 1),
        start_at=iso(round(start)),
        end_at=iso(round(end)) if end is not None else None,
        lane=lane,
        basis=rate.basis,
    )
