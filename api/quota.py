"""Queue limits: how many jobs one client (by address) and all clients together may have queued
or running, each job counted as the jobs it runs (``JobQueue.active_load``: a report as its
trainings, surfaces and analyses, every other kind as one).

The guard (``api/guard.py``) checks, before a submission's route runs, that there is room for
one more job, and hands the route a ``Quota`` in the request's scope; a route whose job counts
as more than one (reports) asks it again with that weight from inside ``JobQueue.submit_*``,
after the queue has looked for an identical active job, so a request sharing one is never
refused. The guard holds one lock from its check to the route's answer, so concurrent
submissions cannot all pass the same check.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from api.jobs import JobQueue
from api.settings import Settings

MAX_CLIENTS_TRACKED = 10_000
MAX_JOBS_TRACKED_PER_CLIENT = 1_000
RETRY_AFTER = {"Retry-After": "30"}
SCOPE_KEY = "landscape.quota"  # where the guard leaves a submission's Quota for its route


class SubmissionLedger:
    """Which jobs each client submitted (recent ones, bounded), to count its active ones."""

    def __init__(self) -> None:
        self._jobs: OrderedDict[str, OrderedDict[str, None]] = OrderedDict()

    def jobs_of(self, client: str) -> list[str]:
        return list(self._jobs.get(client, ()))

    def record(self, client: str, job_id: str) -> None:
        jobs = self._jobs.setdefault(client, OrderedDict())
        self._jobs.move_to_end(client)
        jobs[job_id] = None
        while len(jobs) > MAX_JOBS_TRACKED_PER_CLIENT:
            jobs.popitem(last=False)
        while len(self._jobs) > MAX_CLIENTS_TRACKED:
            self._jobs.popitem(last=False)


@dataclass(frozen=True)
class Quota:
    """One submission's room in the queue: the client's recent jobs and the limits."""

    queue: JobQueue
    settings: Settings
    client_jobs: tuple[str, ...]

    def refusal(self, weight: int = 1) -> str | None:
        """Why a job counting as ``weight`` jobs may not be queued now, or None. A job heavier
        than a whole limit counts as that limit: it is queued only when nothing else is."""
        note = f"; this job counts as {weight} (its trainings, surfaces and analyses)"
        note = note if weight > 1 else ""
        cap = self.settings.max_active_jobs
        total = self.queue.active_load()
        if total + min(weight, cap) > cap:
            return (
                f"the job queue is full ({total} queued or running, limit {cap}){note}; try "
                "again when some have finished"
            )
        cap = self.settings.max_active_jobs_per_client
        mine = self.queue.active_load(self.client_jobs)
        if mine + min(weight, cap) > cap:
            return (
                f"you have {mine} jobs queued or running (limit {cap} per client){note}; wait "
                "for one to finish or cancel one"
            )
        return None

    def admit(self, weight: int) -> None:
        """Raise 429 unless a job counting as ``weight`` jobs fits (``JobQueue``'s ``admit``)."""
        refusal = self.refusal(weight)
        if refusal is not None:
            raise HTTPException(429, refusal, headers=RETRY_AFTER)


def submission_quota(request: Request) -> Quota:
    quota = request.scope.get(SCOPE_KEY)
    assert isinstance(quota, Quota), "every submission passes the RequestGuard, which sets it"
    return quota


QuotaDep = Annotated[Quota, Depends(submission_quota)]
