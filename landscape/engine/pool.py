"""Worker processes of the engine: one per CPU core or per GPU, each with its own
``PointEvaluator``, fed pieces of the grid over a private pipe.

Why private pipes and not shared queues: a worker that dies (OOM killer, kill -9) while
holding a shared queue's lock would wedge every other worker, and a queue shared by all
workers never reports the parent's death (every worker holds its ends open), so a worker
whose parent was killed would block at exit joining its queue feeder thread on a pipe nobody
reads — orphaned, holding its memory. With one duplex pipe per worker, the parent's death is
an EOF/EPIPE at once, and a lost worker is noticed through its process sentinel; its pieces
go to a restarted worker (a bounded number of restarts per pool).

Workers also die with their parent whatever kills it: ``PR_SET_PDEATHSIG`` on Linux, and a
watchdog thread everywhere that exits when the parent pid changes.

Workers never import the parent's ``__main__``. Multiprocessing's spawn (and forkserver)
normally re-runs the parent's main script in each child as ``__mp_main__``, so a user's script
without an ``if __name__ == "__main__":`` guard ran its whole computation again in every
worker, each rewriting the same surface file. A worker needs nothing from that script: its
target lives in this module, and the model arrives pickled. So ``_without_main`` drops the
main-module entries from the preparation data of *our* processes only (matched by name; other
code's processes keep the standard behaviour). Hiding ``__main__.__file__`` while starting
would race with other threads (the API server), and a child that notices it is re-importing
``__main__`` can no longer undo what the script did before calling us. In a notebook there is
no main file to run, so nothing changes there. The one cost: a model whose class is defined in
the script itself cannot be unpickled by a worker, so ``load`` refuses it with that reason and
the evaluator computes in-process.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import logging
import multiprocessing.spawn
import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

WORKER_START_TIMEOUT_S = 600.0  # spawn + import torch + compile, on a busy machine
_PENDING_PER_WORKER = 2  # pieces queued per worker: one running, one ready
_WATCHDOG_PERIOD_S = 0.5

# glibc malloc in the workers: keep freed activation buffers (~1 MB each at the CPU batch
# size) in the heap instead of returning them to the kernel, so every forward pass does not
# page-fault fresh zeroed pages in. Measured with 2 eager workers (resnet20, digits, bench):
# 0.043–0.051 vs 0.061–0.063 s/point. Only set when the user has not set it.
_WORKER_GLIBC_TUNABLES = (
    "glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=536870912"
)

_WORKER_NAME = "landscape-engine-worker"  # process name prefix: see _without_main
_MAIN_KEYS = ("init_main_from_path", "init_main_from_name")
_install_lock = threading.Lock()

Results = dict[str, np.ndarray]
Piece = tuple[int, np.ndarray]  # (task id, coords)


class WorkerLost(RuntimeError):
    """Worker processes died more often than the pool may restart them."""


@dataclass
class _Slot:
    device: str
    proc: Any
    conn: Connection
    pending: dict[int, np.ndarray] = field(default_factory=dict)
    ready: bool = False
    info: dict[str, Any] = field(default_factory=dict)


class WorkerPool:
    """Processes started at once (they import torch while the parent prepares); ``load``
    hands them the prepared model and data; ``run`` evaluates pieces, restarting lost
    workers up to ``max_restarts`` times in all."""

    def __init__(self, devices: list[str], *, max_restarts: int | None = None) -> None:
        import torch.multiprocessing as mp

        self._ctx = mp.get_context("spawn")  # safe with threads in the parent (API server)
        _install_without_main()
        self.devices = list(devices)
        self.max_restarts = 2 * len(devices) if max_restarts is None else max_restarts
        self.restarts = 0
        self._payload: tuple[Any, ...] | None = None
        self._slots = [self._spawn(d) for d in self.devices]

    # -- life cycle ---------------------------------------------------------------------------
    def _spawn(self, device: str) -> _Slot:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_worker_main,
            args=(child_conn, os.getpid(), device, _memory_cap(device)),
            name=f"{_WORKER_NAME}-{device}",
            daemon=True,
        )
        with _worker_env():
            proc.start()
        child_conn.close()  # the child's end lives in the child only: its death is an EOF
        slot = _Slot(device, proc, parent_conn)
        if self._payload is not None:
            self._send_payload(slot)
        return slot

    def _send_payload(self, slot: _Slot) -> None:
        assert self._payload is not None
        if slot.device.startswith("cuda"):
            # by value, not through shared memory: each GPU worker copies the data to its
            # device anyway, and a container's /dev/shm is often far smaller than CIFAR-10
            module, params, dirs, batches, config = self._payload
            slot.conn.send((module, params, dirs, _by_value(batches), config))
        else:
            slot.conn.send(self._payload)

    def load(self, payload: tuple[Any, ...], timeout: float = WORKER_START_TIMEOUT_S) -> None:
        """Give every worker the evaluator's inputs and wait until each has built (and
        compiled) its ``PointEvaluator``; raises if one cannot."""
        in_main = _classes_in_main(payload[0])
        if in_main:
            raise RuntimeError(
                f"the model's {', '.join(in_main)} is defined in the script being run "
                "(__main__), which engine workers do not import; define it in a module "
                "you import to use every core"
            )
        self._payload = payload
        for slot in self._slots:
            self._send_payload(slot)
        for slot in self._slots:
            self._await_ready(slot, timeout)

    @property
    def info(self) -> list[dict[str, Any]]:
        """Each worker's latest ``PointEvaluator.describe()``."""
        return [s.info for s in self._slots]

    def _await_ready(self, slot: _Slot, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not slot.conn.poll(1.0):
            if not slot.proc.is_alive():
                raise RuntimeError(f"engine worker on {slot.device} died while starting")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer from the engine worker in {timeout:.0f} s")
        kind, info = slot.conn.recv()
        if kind != "ready":
            raise RuntimeError(f"engine worker failed to start: {info}")
        slot.ready = True
        slot.info = info
        return info  # type: ignore[no-any-return]

    def pids(self) -> list[int]:
        return [s.proc.pid for s in self._slots]

    def close(self, *, kill: bool) -> None:
        """Stop the workers: a polite ``None`` when idle, killed when work is in flight."""
        for slot in self._slots:
            with contextlib.suppress(Exception):
                if not kill:
                    slot.conn.send(None)
        for slot in self._slots:
            if kill:
                slot.proc.kill()
            slot.proc.join(timeout=0.5 if kill else 10)
            if slot.proc.is_alive():
                slot.proc.kill()
                slot.proc.join(timeout=5)
            with contextlib.suppress(Exception):
                slot.conn.close()
        self._slots = []
        self._payload = None  # the model, directions and data kept for restarts

    # -- work ---------------------------------------------------------------------------------
    def run(self, pieces: Iterator[Piece]) -> Iterator[tuple[int, Results, float]]:
        """``(task id, values, seconds)`` per piece as pieces finish, in any order."""
        queued: deque[Piece] = deque()
        exhausted = False
        while True:
            for slot in self._slots:
                while slot.ready and len(slot.pending) < _PENDING_PER_WORKER:
                    if not queued and not exhausted:
                        nxt = next(pieces, None)
                        if nxt is None:
                            exhausted = True
                        else:
                            queued.append(nxt)
                    if not queued:
                        break
                    task_id, coords = queued.popleft()
                    slot.pending[task_id] = coords
                    slot.conn.send((task_id, coords))
            if exhausted and not queued and not any(s.pending for s in self._slots):
                return
            by_handle: dict[Any, _Slot] = {}
            for slot in self._slots:
                by_handle[slot.conn] = slot
                by_handle[slot.proc.sentinel] = slot
            for handle in wait(list(by_handle), timeout=1.0):
                slot = by_handle[handle]
                if slot not in self._slots:
                    continue  # replaced while handling an earlier handle of this round
                message = self._receive(slot)
                if message is None:
                    queued.extendleft(sorted(slot.pending.items(), reverse=True))
                    self._replace(slot)
                    continue
                task_id, values, elapsed, info = message
                if task_id == "error":
                    raise RuntimeError(f"engine worker failed:\n{values}")
                slot.info = info or slot.info
                if slot.pending.pop(task_id, None) is not None:
                    yield task_id, values, elapsed

    def _receive(self, slot: _Slot) -> tuple[Any, Any, float, dict[str, Any]] | None:
        """The next message of ``slot``, or ``None`` when its process is gone."""
        try:
            if slot.conn.poll():
                return slot.conn.recv()  # type: ignore[no-any-return]
        except (EOFError, OSError):
            return None
        return None if not slot.proc.is_alive() else ("stale", None, 0.0, {})

    def _replace(self, slot: _Slot) -> None:
        """Start a new worker on the lost one's device (its pieces are queued again)."""
        exitcode = slot.proc.exitcode
        with contextlib.suppress(Exception):
            slot.proc.join(timeout=1)
            slot.conn.close()
        if self.restarts >= self.max_restarts:
            raise WorkerLost(
                f"engine worker process {slot.proc.pid} on {slot.device} died (exit code "
                f"{exitcode}); {self.restarts} restart(s) already used"
            )
        self.restarts += 1
        log.warning(
            "engine worker %s on %s died (exit code %s): restarting it (%d of at most %d)",
            slot.proc.pid, slot.device, exitcode, self.restarts, self.max_restarts,
        )  # fmt: skip
        new = self._spawn(slot.device)
        self._slots[self._slots.index(slot)] = new
        self._await_ready(new, WORKER_START_TIMEOUT_S)


def _classes_in_main(module: Any) -> list[str]:
    """Names of the classes among ``module``'s submodules that live in ``__main__``."""
    from torch import nn

    if not isinstance(module, nn.Module):
        return []
    return sorted({type(m).__name__ for m in module.modules() if type(m).__module__ == "__main__"})


def _without_main(
    get_preparation_data: Callable[[str], dict[str, Any]],
) -> Callable[[str], dict[str, Any]]:
    """``get_preparation_data`` minus the main-module entries for engine workers (by name)."""

    @functools.wraps(get_preparation_data)
    def prepare(name: str) -> dict[str, Any]:
        data = get_preparation_data(name)
        if name.startswith(_WORKER_NAME):
            for key in _MAIN_KEYS:
                data.pop(key, None)
        return data

    prepare.landscape_without_main = True  # type: ignore[attr-defined]
    return prepare


def _install_without_main() -> None:
    """Wrap ``multiprocessing.spawn.get_preparation_data`` once (popen_spawn_posix and
    popen_forkserver look it up at each start)."""
    with _install_lock:
        current = multiprocessing.spawn.get_preparation_data
        if not getattr(current, "landscape_without_main", False):
            setattr(multiprocessing.spawn, "get_preparation_data", _without_main(current))  # noqa: B010


def _by_value(batches: dict[str, Any]) -> dict[str, Any]:
    """Split batches with numpy arrays in place of tensors (pickled as bytes)."""
    return {
        split: dataclasses.replace(
            b,
            xs=[x.numpy() for x in b.xs],
            ys=[y.numpy() for y in b.ys],
            masks=[m.numpy() for m in b.masks],
        )
        for split, b in batches.items()
    }


def _as_tensors(batches: dict[str, Any], channels_last: bool) -> dict[str, Any]:
    """Undo ``_by_value`` (a no-op for tensors)."""
    import torch

    def tensor(a: Any) -> Any:
        t = torch.from_numpy(a) if isinstance(a, np.ndarray) else a
        return (
            t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t
        )

    return {
        split: dataclasses.replace(
            b,
            xs=[tensor(x) for x in b.xs],
            ys=[tensor(y) for y in b.ys],
            masks=[tensor(m) for m in b.masks],
        )
        for split, b in batches.items()
    }


@contextlib.contextmanager
def _worker_env() -> Iterator[None]:
    """Environment for spawned workers (inherited at spawn), restored afterwards."""
    added = "GLIBC_TUNABLES" not in os.environ
    if added:
        os.environ["GLIBC_TUNABLES"] = _WORKER_GLIBC_TUNABLES
    try:
        yield
    finally:
        if added:
            os.environ.pop("GLIBC_TUNABLES", None)


def die_with_parent(parent_pid: int) -> None:
    """Make this process end when ``parent_pid`` does, whatever kills the parent."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watchdog() -> None:
        while True:
            time.sleep(_WATCHDOG_PERIOD_S)
            if os.getppid() != parent_pid:
                os._exit(1)  # no cleanup: nothing of ours is worth finishing

    threading.Thread(target=watchdog, name="parent-watchdog", daemon=True).start()


def _thread_lock_for_progress_bars() -> None:
    """torch.fx opens a (disabled) tqdm bar while it compiles, and tqdm's first bar creates a
    multiprocessing lock: a semaphore that a worker killed mid-surface (Ctrl-C, a cancelled
    job) leaves behind ("resource_tracker: There appear to be 2 leaked semaphore objects").
    A worker's bars are never shared with another process, so a thread lock serves."""
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())


def _memory_cap(device: str) -> float:
    """The share of ``device`` the parent's allocator may use (1: none set), for its GPU
    worker to keep: a service worker capped to half a shared GPU must not spawn processes
    that each take all of it."""
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        return 1.0
    from landscape.engine.plan import memory_fraction

    return memory_fraction(torch.device(device))


def _worker_main(conn: Connection, parent_pid: int, device: str, memory_cap: float = 1.0) -> None:
    """A worker process: one CPU thread, its own PointEvaluator, pieces until ``None``/EOF."""
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    import torch

    from landscape.engine.devices import flush_denormals
    from landscape.engine.point_evaluator import PointEvaluator

    flush_denormals()
    _thread_lock_for_progress_bars()
    torch.set_num_threads(1)
    try:
        if device.startswith("cuda"):  # its own process: its GPU is the current device for good
            torch.cuda.set_device(device)
            if memory_cap < 1.0:
                torch.cuda.set_per_process_memory_fraction(memory_cap, device)
        payload = conn.recv()
        module, params, dirs, batches, config = payload
        config.device = device
        batches = _as_tensors(batches, config.channels_last)
        core = PointEvaluator(module, params, dirs, batches, config)
        del payload, batches
        conn.send(("ready", core.describe()))
    except (EOFError, OSError):
        return
    except BaseException:
        with contextlib.suppress(Exception):
            conn.send(("init_error", traceback.format_exc()))
        return
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone or closed the pool
        if task is None:
            return
        task_id, coords = task
        try:
            start = time.perf_counter()
            values = core.evaluate(coords)
            conn.send((task_id, values, time.perf_counter() - start, core.describe()))
        except (EOFError, OSError, BrokenPipeError):
            return
        except BaseException:
            with contextlib.suppress(Exception):
                conn.send(("error", traceback.format_exc(), 0.0, {}))
