"""Worker identities: ``host:pid:random``, so a restarted server on the same host can tell its
dead workers' jobs (requeued at once) from live ones of other processes (left to their lease),
and ending in ``-express`` for an express-lane worker, so estimates know its lane."""

from __future__ import annotations

import os
import socket
import uuid

from api.schedule import Lane

_HOST = socket.gethostname()
_EXPRESS = "-express"  # ends the id of an express-lane worker, so estimates know its lane


def new_worker_id(lane: Lane = "general") -> str:
    """``host:pid:random``: lets a restarted server on the same host spot its dead workers."""
    suffix = _EXPRESS if lane == "express" else ""
    return f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}{suffix}"


def worker_lane(worker_id: str | None) -> Lane:
    return "express" if worker_id and worker_id.endswith(_EXPRESS) else "general"


def worker_is_dead(worker_id: str, live_here: set[str]) -> bool:
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
