"""Job workers: claim a queued job, hand its stored plan to the runner of its kind, record
the outcome.

A worker is a thread (``landscape serve`` starts them next to the API; ``landscape worker``
runs them alone). Each serves a lane of the fair queue (``api/schedule.py``): the general
workers take any job, shortest first with an aging bound; the express workers
(``LANDSCAPE_EXPRESS_WORKERS``) only short ones, so a small job never waits for a long one.
While a job runs, a heartbeat thread renews the job's lease and watches its cancel flag;
the runner's ``should_stop`` reads those flags, so cancel and shutdown stop the work at the
next chunk (or training batch, or analysis step) and partial files stay resumable. An express
worker also stops a job that overruns the lane (it has run ``EXPRESS_OVERRUN`` times the
cut-off: its estimate was wrong) and hands it back to the queue with its estimate
raised to twice what it has run, so it resumes in the general lane and the next short job
starts.

Jobs run where this process's settings say (``LANDSCAPE_DEVICE``), not where they were planned.
On CUDA, one job at a time per process: precision switches and free-memory reads are global to
the process, so worker threads take turns and more concurrent GPU jobs take more processes;
a CUDA process starts no express workers (they could never run beside a job).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from api.cuda_check import require_cuda
from api.db import Job
from api.jobs import JobQueue
from api.planning.rate import measured_throughput
from api.redact import public_error
from api.runners import gradient_flow, hessian, report, sharpness, surface
from api.runners.base import JobContext, JobKind, Runner, worker_device
from api.schedule import EXPRESS_OVERRUN, Lane, QueuePolicy
from api.settings import Settings
from api.worker_ids import new_worker_id
from landscape.errors import CancelledError, SpecError

log = logging.getLogger(__name__)

RUNNERS: Mapping[JobKind, Runner] = MappingProxyType(
    {
        JobKind.SURFACE: surface.run,
        JobKind.HESSIAN: hessian.run,
        JobKind.GRADIENT_FLOW: gradient_flow.run,
        JobKind.SHARPNESS: sharpness.run,
        JobKind.REPORT: report.run,
    }
)

# Held by a CUDA worker thread from claiming a job to recording its outcome, so the other
# threads of this process leave queued jobs queued (for another process) instead of claiming
# them and waiting.
_CUDA_LOCK = threading.Lock()


class Worker:
    """One job at a time: claim, run with a heartbeat, record the outcome."""

    def __init__(
        self,
        queue: JobQueue,
        settings: Settings,
        sessions: sessionmaker[Session],
        *,
        runners: Mapping[JobKind, Runner] = RUNNERS,
        stop: threading.Event | None = None,
        lane: Lane = "general",
    ) -> None:
        self.queue, self.settings, self.sessions = queue, settings, sessions
        self.runners = runners
        self.stop = stop or threading.Event()
        self.lane = lane
        self.id = new_worker_id(lane)
        self.device_lock = _CUDA_LOCK if _on_cuda(settings) else None

    def run_forever(self) -> None:
        log.info("worker %s started", self.id)
        while not self.stop.is_set():
            try:
                if not self.run_once():
                    self.stop.wait(self.settings.poll_seconds)
            except Exception:  # a database hiccup must not kill the worker thread
                log.exception("worker %s: unexpected error; retrying", self.id)
                self.stop.wait(self.settings.poll_seconds)
        log.info("worker %s stopped", self.id)

    def run_once(self) -> bool:
        """Run one job if any is waiting; True when a job was taken. A CUDA worker claims one
        only while no other thread of this process runs one (else it idles a poll)."""
        if self.device_lock is None:
            return self._claim_and_run()
        if not self.device_lock.acquire(blocking=False):
            return False
        try:
            return self._claim_and_run()
        finally:
            self.device_lock.release()

    def _claim_and_run(self) -> bool:
        job = self.queue.claim(self.id, self.lane)
        if job is None:
            return False
        self._run(job)
        return True

    def _run(self, job: Job) -> None:
        cancelled, lost, done_beating = threading.Event(), threading.Event(), threading.Event()

        def beat() -> None:
            interval = max(0.05, min(self.settings.lease_seconds / 3, 2.0))
            while not done_beating.wait(interval):
                try:
                    ours, cancel = self.queue.heartbeat(job.id, self.id)
                except Exception:
                    log.exception("heartbeat for job %s failed", job.id)
                    continue
                if cancel:
                    cancelled.set()
                if not ours:
                    lost.set()

        limit = self._express_limit()
        started, overran = time.monotonic(), threading.Event()

        def should_stop() -> bool:
            if limit is not None and time.monotonic() - started > limit:
                overran.set()
            return self.stop.is_set() or cancelled.is_set() or lost.is_set() or overran.is_set()

        last_write, last_stage = [0.0], [job.stage]

        def report(
            *,
            stage: str,
            done: int | None = None,
            total: int | None = None,
            eta: float | None = None,
            train: dict[str, Any] | None = None,
        ) -> None:
            # Progress is throttled: a chunk (or a tiny model's epoch) may finish many times a
            # second. A new stage and the last point or epoch always get through, so the page
            # never shows "training" for a job that is computing, or 9/10 for a finished step.
            t = time.monotonic()
            final = (done is not None and total is not None and done >= total) or (
                train is not None and train["epoch"] >= train["epochs"]
            )
            throttled = t - last_write[0] < self.settings.progress_every_seconds
            if throttled and not final and stage == last_stage[0]:
                return
            last_write[0], last_stage[0] = t, stage
            if not self.queue.set_progress(
                job.id, self.id, stage=stage, done=done, total=total, eta=eta, train=train
            ):
                lost.set()

        heart = threading.Thread(target=beat, name=f"heartbeat-{job.id[:8]}", daemon=True)
        heart.start()
        ctx = JobContext(job.id, self.settings, self.sessions, should_stop, report)
        try:
            self._runner(job)(_stored_plan(job), ctx)
        except CancelledError:
            if overran.is_set() and not (cancelled.is_set() or lost.is_set() or self.stop.is_set()):
                self._left_express(job, time.monotonic() - started)
            self._stopped(job, cancelled.is_set(), lost.is_set())
        except Exception as exc:  # a user error or a bug: record it on the job, keep the worker
            # One line without server paths for clients; the traceback is logged under its id.
            message, _ = public_error(exc)
            self.queue.finish(job.id, self.id, "failed", message)
        else:
            self.queue.finish(job.id, self.id, "done")
        finally:
            done_beating.set()
            heart.join()
            _free_cuda_cache()

    def _express_limit(self) -> float | None:
        """Seconds an express worker lets a job run (None: no limit, the general lane)."""
        if self.lane != "express":
            return None
        return EXPRESS_OVERRUN * self.settings.express_max_seconds

    def _left_express(self, job: Job, ran_s: float) -> None:
        """Raise an overrunning express job's estimate to twice the work it has done (its
        rest is unknown: as much again), so no express worker takes it again and the general
        lane orders it by what it has shown. Its attempts then count it as resumed: it never
        measures a rate."""
        kind = job.kind or "surface"
        with self.sessions() as session, session.begin():
            rate = measured_throughput(session, QueuePolicy.from_settings(self.settings)).rate(kind)
            raised = 2.0 * ran_s * rate.flops_per_second
            session.execute(
                update(Job)
                .where(Job.id == job.id, Job.worker_id == self.id, Job.status == "running")
                .values(cost_flops=max(raised, job.cost_flops or 0.0))
            )
        log.info("job %s overran the express lane after %.0f s; back to the queue", job.id, ran_s)

    def _runner(self, job: Job) -> Runner:
        try:
            return self.runners[JobKind(job.kind or JobKind.SURFACE)]
        except (ValueError, KeyError):
            raise SpecError(f"this worker runs no jobs of kind {job.kind!r}") from None

    def _stopped(self, job: Job, cancelled: bool, lost: bool) -> None:
        latest = self.queue.get(job.id)
        if cancelled or (latest is not None and latest.cancel_requested):
            log.info("job %s cancelled", job.id)
            self.queue.finish(job.id, self.id, "cancelled", None)
        elif lost:
            log.warning("job %s: lease lost to another worker; leaving it", job.id)
        else:  # shutdown: back to the queue, resumed from the partial file by the next worker
            log.info("job %s released for resume (shutdown)", job.id)
            self.queue.release(job.id, self.id)


class WorkerPool:
    """N general and ``express`` express-lane worker threads sharing one stop flag; ``stop()``
    lets each finish its chunk. On CUDA no express threads: they could only take turns with
    the general ones (``api/schedule.py`` models the queue so)."""

    def __init__(
        self,
        queue: JobQueue,
        settings: Settings,
        sessions: sessionmaker[Session],
        count: int,
        *,
        runners: Mapping[JobKind, Runner] = RUNNERS,
        express: int | None = None,
    ) -> None:
        self.stop_event = threading.Event()
        lanes: list[Lane] = ["general"] * count
        express = settings.express_workers if express is None else express
        if express and _on_cuda(settings):  # its threads take turns: no lane beside a job
            log.info("no express lane: a CUDA worker process runs one job at a time")
            express = 0
        lanes += ["express"] * express
        self.workers = [
            Worker(queue, settings, sessions, runners=runners, stop=self.stop_event, lane=lane)
            for lane in lanes
        ]
        self.queue, self.settings = queue, settings
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        if _on_cuda(self.settings):
            cap_gpu_memory(self.settings.gpu_memory_fraction)
        self.queue.recover({worker.id for worker in self.workers})
        for index, worker in enumerate(self.workers):
            thread = threading.Thread(
                target=worker.run_forever,
                name=f"landscape-worker-{index}-{worker.lane}",
                daemon=True,
            )
            thread.start()
            self.threads.append(thread)

    def stop(self, timeout: float = 60.0) -> None:
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.threads = [t for t in self.threads if t.is_alive()]
        if self.threads:
            log.warning(
                "%d worker(s) still busy at shutdown; their leases will lapse", len(self.threads)
            )


def _on_cuda(settings: Settings) -> bool:
    """Whether this process's jobs run on CUDA (and so take turns on it)."""
    try:
        return worker_device(settings).type == "cuda"
    except SpecError:  # CUDA asked for, none here: every job fails saying so, none computes
        return False


def cap_gpu_memory(fraction: float | None) -> None:
    """Cap this process's allocator on every visible GPU at ``fraction`` of its memory, so
    worker processes sharing a GPU size their batches from their own share instead of each
    from the whole free memory (the engine reads the cap; its GPU processes inherit it)."""
    if fraction is None:
        return
    import torch

    for index in range(torch.cuda.device_count()):
        torch.cuda.set_per_process_memory_fraction(fraction, index)
    log.info("GPU memory capped at %.3g of each device for this process", fraction)


def _free_cuda_cache() -> None:
    """Hand the allocator's cached blocks back after a job, so the next job (or another
    process on this GPU) sizes its batches from the memory really free."""
    import torch

    if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]  # unannotated in torch
        torch.cuda.empty_cache()


def _stored_plan(job: Job) -> dict[str, Any]:
    """The plan the route made and stored; a job queued by a version that stored none cannot
    be run faithfully, so it fails with a message saying what to do."""
    if job.plan is None:
        raise SpecError("this job was queued by an older version of the server: request it again")
    return dict(job.plan)


def standalone_pool(
    settings: Settings, *, runners: Mapping[JobKind, Runner] = RUNNERS
) -> WorkerPool:
    """Workers without the API (``landscape worker``): their own engine and queue. Told to
    use CUDA, they refuse to start without it (``api.cuda_check``), not fail every job."""
    from api.db import make_engine, make_sessionmaker

    if settings.device == "cuda":
        require_cuda()
    settings.ensure_dirs()
    sessions = make_sessionmaker(make_engine(settings.db_url))
    queue = JobQueue(sessions, settings.lease_seconds, QueuePolicy.from_settings(settings))
    return WorkerPool(queue, settings, sessions, max(1, settings.workers), runners=runners)
