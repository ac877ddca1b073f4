"""Job workers: claim a queued job, train its model if needed, compute its surface.

Jobs of ``kind="hessian"`` (an analysis of a finished surface) go to ``hessian_runner``
(``api.hessian.run_hessian_job``) instead; heartbeat, cancel and outcome are the same.

A worker is a thread (``landscape serve`` starts them next to the API; ``landscape worker``
runs them alone). While a job runs, a heartbeat thread renews the job's lease and watches its
cancel flag; the library's ``should_stop`` callback reads those flags, so cancel and shutdown
stop the work at the next chunk (or training batch) and the partial files stay resumable.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from api.db import CheckpointRecord, Job
from api.hessian import run_hessian_job
from api.jobs import JobQueue, new_worker_id
from api.planning import Plan, plan_surface
from api.schemas import SurfaceRequest
from api.settings import Settings
from landscape.errors import CancelledError, LandscapeError
from landscape.specs import EngineOptions

log = logging.getLogger(__name__)


@dataclass
class JobContext:
    """What a runner gets besides the request: where things go and how to report."""

    job_id: str
    settings: Settings
    sessions: sessionmaker[Session]
    should_stop: Callable[[], bool]
    report: Callable[..., None]  # report(stage=..., done=..., total=..., eta=..., train=...)
    extra: dict[str, Any] = field(default_factory=dict)


Runner = Callable[[dict[str, Any], JobContext], None]


@contextlib.contextmanager
def _file_lock(path: Path, should_stop: Callable[[], bool]) -> Iterator[None]:
    """One trainer per checkpoint across threads and processes on this host (flock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if should_stop():
                    raise CancelledError("stopped while waiting for another trainer") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_surface_job(request: dict[str, Any], ctx: JobContext) -> None:
    """The real runner: the same library calls as ``landscape train`` + ``landscape surface``."""
    from landscape.surface import Progress, compute_surface
    from landscape.train import train_model

    settings = ctx.settings
    settings.ensure_dirs()
    with ctx.sessions() as session:
        plan = plan_surface(SurfaceRequest.model_validate(request), settings, session)
    total = plan.surface_spec.grid.n_points
    if plan.train_spec is not None and _needs_training(plan):
        start = {"epoch": 0, "epochs": plan.train_spec.epochs, "loss": None, "acc": None}
        ctx.report(stage="training", done=0, total=total, eta=None, train=start)
        with _file_lock(plan.checkpoint_path.with_suffix(".lock"), ctx.should_stop):
            if _needs_training(plan):  # another worker may have just trained it

                def on_epoch(record: dict[str, Any]) -> None:
                    epochs, epoch = record.get("epochs", 0), record.get("epoch", 0)
                    elapsed = float(record.get("elapsed_s", 0.0))
                    eta = elapsed / epoch * (epochs - epoch) if epoch else None
                    train = {
                        "epoch": epoch,
                        "epochs": epochs,
                        "loss": _finite(record.get("train_loss")),
                        "acc": _finite(record.get("train_acc")),
                    }
                    ctx.report(stage="training", eta=eta, train=train)

                metadata = train_model(
                    plan.train_spec,
                    plan.checkpoint_path,
                    on_epoch=on_epoch,
                    should_stop=ctx.should_stop,
                )
                _register_trained(
                    ctx.sessions, plan.checkpoint_id, plan.model, plan.dataset, metadata
                )

    def on_progress(progress: Progress) -> None:
        ctx.report(stage="computing", done=progress.done, total=progress.total, eta=progress.eta_s)

    if ctx.should_stop():  # engine set-up (data, compile, processes) takes a while: skip it
        raise CancelledError("stopped before computing the surface")
    ctx.report(stage="computing", eta=None)
    options = EngineOptions(
        device=settings.device, workers=settings.engine_workers, compile=settings.engine_compile
    )
    compute_surface(
        plan.surface_spec,
        plan.surface_path,
        options=options,
        on_progress=on_progress,
        should_stop=ctx.should_stop,
    )


def _finite(value: Any) -> float | None:
    """A JSON-safe number: a diverged epoch's NaN loss would break the JSON column and wire."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _needs_training(plan: Plan) -> bool:
    """No checkpoint yet, or (PCA directions) a trajectory snapshot is gone: train (again)."""
    if not plan.checkpoint_path.exists():
        return True
    return any(not Path(p).exists() for p in plan.surface_spec.directions.trajectory)


def _register_trained(
    sessions: sessionmaker[Session],
    checkpoint_id: str,
    model: str,
    dataset: str,
    metadata: dict[str, Any],
) -> None:
    """List a trained checkpoint in GET /api/checkpoints so it can be reused by id."""
    import json

    details = json.loads(json.dumps(metadata, default=str))  # JSON-safe copy
    with sessions() as session, session.begin():
        if session.get(CheckpointRecord, checkpoint_id) is None:
            session.add(
                CheckpointRecord(
                    id=checkpoint_id,
                    model=model,
                    dataset=dataset,
                    source="trained",
                    filename=f"{model}-{dataset}.pt",
                    details=details,
                )
            )


class Worker:
    """One job at a time: claim, run with a heartbeat, record the outcome."""

    def __init__(
        self,
        queue: JobQueue,
        settings: Settings,
        sessions: sessionmaker[Session],
        *,
        runner: Runner = run_surface_job,
        hessian_runner: Runner = run_hessian_job,
        stop: threading.Event | None = None,
    ) -> None:
        self.queue, self.settings, self.sessions, self.runner = queue, settings, sessions, runner
        self.hessian_runner = hessian_runner
        self.stop = stop or threading.Event()
        self.id = new_worker_id()

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
        """Run one job if any is waiting; True when a job was taken."""
        job = self.queue.claim(self.id)
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

        def should_stop() -> bool:
            return self.stop.is_set() or cancelled.is_set() or lost.is_set()

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
            runner = self.hessian_runner if job.kind == "hessian" else self.runner
            runner(job.request, ctx)
        except CancelledError:
            self._stopped(job, cancelled.is_set(), lost.is_set())
        except LandscapeError as exc:
            log.warning("job %s failed: %s", job.id, exc)
            self.queue.finish(job.id, self.id, "failed", str(exc))
        except Exception as exc:  # a bug: record it on the job instead of killing the worker
            log.exception("job %s crashed", job.id)
            self.queue.finish(job.id, self.id, "failed", f"internal error: {exc!r}")
        else:
            self.queue.finish(job.id, self.id, "done")
        finally:
            done_beating.set()
            heart.join()

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
    """N worker threads sharing one stop flag; ``stop()`` lets each finish its chunk."""

    def __init__(
        self,
        queue: JobQueue,
        settings: Settings,
        sessions: sessionmaker[Session],
        count: int,
        *,
        runner: Runner = run_surface_job,
    ) -> None:
        self.stop_event = threading.Event()
        self.workers = [
            Worker(queue, settings, sessions, runner=runner, stop=self.stop_event)
            for _ in range(count)
        ]
        self.queue = queue
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        self.queue.recover({worker.id for worker in self.workers})
        for index, worker in enumerate(self.workers):
            thread = threading.Thread(
                target=worker.run_forever, name=f"landscape-worker-{index}", daemon=True
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


def standalone_pool(settings: Settings, *, runner: Runner = run_surface_job) -> WorkerPool:
    """Workers without the API (``landscape worker``): their own engine and queue."""
    from api.db import make_engine, make_sessionmaker

    settings.ensure_dirs()
    sessions = make_sessionmaker(make_engine(settings.db_url))
    queue = JobQueue(sessions, settings.lease_seconds)
    return WorkerPool(queue, settings, sessions, max(1, settings.workers), runner=runner)
