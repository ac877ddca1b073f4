"""How long a small job from the web form waits while the demo computes.

Starts ``landscape serve --demo`` on a fresh data folder (its default workers: one general,
one express), waits until a demo job is running, then submits what the web form sends for an
11×11 mlp-plain surface with the form's defaults (30 epochs, digits, filter-normalized random
directions) and prints the queue estimate the server answered with, when the job started and
when it finished, measured from its submission, with the CPU model and the demo jobs still
queued or running behind and beside it.

    python -m bench.queue_wait [--data-dir DIR] [--port PORT]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from landscape.engine.plan import cpu_model

FORM_JOB: dict[str, Any] = {
    "model": "mlp-plain",
    "dataset": "digits",
    "train": {"epochs": 30},
    "grid": {"nx": 11, "ny": 11, "xrange": [-1, 1], "yrange": [-1, 1]},
    "directions": {"kind": "random", "normalization": "filter", "ignore": "biasbn", "seed": 0},
    "splits": ["train"],
    "loss": "cross_entropy",
    "label": "web-form job beside the demo (bench)",
}


def wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def seconds_between(start: str, end: str | None) -> float | None:
    if end is None:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a new temp folder")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="landscape-bench-"))
    url = f"http://127.0.0.1:{args.port}"
    command = [sys.executable, "-m", "landscape.cli", "serve", "--demo", "--port", str(args.port),
               "--data-dir", str(data_dir)]  # fmt: skip
    log = (data_dir / "serve.log").open("w") if data_dir.exists() else None
    if log is None:
        data_dir.mkdir(parents=True)
        log = (data_dir / "serve.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:

        def get(path: str) -> Any:
            try:
                return httpx.get(f"{url}{path}", timeout=10).json()
            except httpx.HTTPError:
                return None

        wait(lambda: get("/healthz"), 120, "the server")
        running = wait(
            lambda: [j for j in get("/api/jobs") or [] if j["status"] == "running"],
            600,
            "a demo job to run",
        )
        reply = httpx.post(f"{url}/api/surfaces", json=FORM_JOB, timeout=30).json()
        job = reply["job"]
        estimate = job.get("estimate") or {}
        job_id = job["id"]
        done = wait(
            lambda: (j := get(f"/api/jobs/{job_id}")) and j["status"] in ("done", "failed") and j,
            3600,
            "the form's job",
        )
        others = [j for j in get("/api/jobs") or [] if j["id"] != job_id]
        print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
        print(f"demo jobs running when it was submitted: {[j['label'] for j in running]}")
        print(f"demo jobs queued or running when it finished: "
              f"{sum(j['status'] in ('queued', 'running') for j in others)}")  # fmt: skip
        print(f"server's estimate at submission: {estimate}")
        print(f"status: {done['status']} {done.get('error') or ''}")
        start = seconds_between(done["created_at"], done["started_at"])
        end = seconds_between(done["created_at"], done["finished_at"])
        print(f"started {start:.1f} s after submission; finished after {end:.1f} s")
        return 0 if done["status"] == "done" else 1
    finally:
        server.terminate()
        server.wait(60)
        log.close()


if __name__ == "__main__":
    raise SystemExit(main())
