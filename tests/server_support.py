"""What the process tests share: a real ``landscape serve`` in its own session, and the
memory of a process family read from ``/proc``."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.api.test_api_process import free_port, wait_for

SERVE = "from landscape.cli import main; raise SystemExit(main())"


class ServeProcess:
    """``landscape serve`` on a free port with ``env``, its data in ``root/data`` and its log
    in ``root/serve.log``; ``stop()`` kills it."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.data = root / "data"
        self.port = free_port()
        self.log = (root / "serve.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, "serve", "--data-dir", str(self.data),
             "--port", str(self.port)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(self._healthy, 90, "server start")

    def _healthy(self) -> bool:
        assert self.proc.poll() is None, "server exited during start-up"
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.log.close()


def family_rss(pid: int) -> int:
    """VmRSS of ``pid`` and of every process descending from it, in bytes."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    family, grew = {pid}, True
    while grew:
        more = {child for child, parent in parents.items() if parent in family} - family
        family |= more
        grew = bool(more)
    total = 0
    for member in family:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


class HealthSampler(threading.Thread):
    """The server family's memory every few milliseconds, and ``/healthz``'s latency every
    50 ms, until stopped (``max_rss`` in bytes, ``health`` in seconds)."""

    def __init__(self, server: ServeProcess) -> None:
        super().__init__(daemon=True)
        self.server, self.halt = server, threading.Event()
        self.max_rss = 0
        self.health: list[float] = []

    def run(self) -> None:
        last = 0.0
        with httpx.Client(timeout=10) as client:
            while not self.halt.is_set():
                self.max_rss = max(self.max_rss, family_rss(self.server.proc.pid))
                if time.monotonic() - last > 0.05:
                    started = time.monotonic()
                    assert client.get(f"{self.server.url}/healthz").status_code == 200
                    self.health.append(time.monotonic() - started)
                    last = time.monotonic()
                time.sleep(0.005)

    def __enter__(self) -> HealthSampler:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.halt.set()
        self.join(30)
