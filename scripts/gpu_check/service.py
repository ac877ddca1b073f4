"""Step i: the service as deployed — ``landscape serve`` with its in-process worker on this
run's device, a small surface computed over REST, read back and downloaded, then a clean stop."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from scripts.gpu_check.common import ROOT, Context, Result, Skip

GRID = 5
START_TIMEOUT_S = 120.0  # importing torch and the web stack on a cold disk
JOB_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(method: str, url: str, body: Any = None, timeout: float = 30) -> tuple[int, bytes]:
    """Status and body of one HTTP request (stdlib only: the GPU box may lack httpx)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as reply:
            return int(reply.status), reply.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def get_json(url: str) -> Any:
    status, body = request("GET", url)
    if status != 200:
        raise RuntimeError(f"GET {url}: {status} {body[:300]!r}")
    return json.loads(body)


def missing_web_stack(env: dict[str, str]) -> str | None:
    """Why ``landscape serve`` cannot start with this Python (its last error line), or None:
    asked in a fresh process, as the server would import it."""
    probe = subprocess.run(
        [sys.executable, "-c", "import uvicorn, api.app"], env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    if probe.returncode == 0:
        return None
    lines = probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"]
    return lines[-1][:300]


def service_env(ctx: Context, data: Path) -> dict[str, str]:
    """The environment of the served process: none of the caller's ``LANDSCAPE_*`` settings
    (an operator's database or token must not meet the check), the worker on this device."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDSCAPE_")}
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    kind = ctx.device.type
    env |= {
        "PYTHONPATH": path,
        "LANDSCAPE_DATA_DIR": str(data),
        "LANDSCAPE_DEVICE": kind,
        "LANDSCAPE_COMPUTE_DEVICE": kind,
        "LANDSCAPE_POLL_SECONDS": "0.2",
        "LANDSCAPE_PROGRESS_EVERY_SECONDS": "0",
    }
    if ctx.cuda:
        env["LANDSCAPE_ENGINE_DEVICES"] = json.dumps([ctx.device.index or 0])
    else:
        env |= {"LANDSCAPE_ENGINE_WORKERS": "1", "OMP_NUM_THREADS": "1"}
    return env


def surface_request(ctx: Context) -> dict[str, Any]:
    """README's REST example, small: one epoch on a digits subset, a 5×5 grid."""
    return {
        "model": "resnet20",
        "dataset": "digits",
        "train": {"epochs": 1},
        "train_size": ctx.sizes.service_train_size,
        "grid": {"nx": GRID, "ny": GRID, "xrange": [-1, 1], "yrange": [-1, 1]},
        "directions": {"normalization": "filter", "ignore": "biasbn", "seed": 0},
    }


def step_service(ctx: Context) -> Result:
    folder = ctx.tmp / "service"
    folder.mkdir(parents=True, exist_ok=True)
    env = service_env(ctx, folder / "data")
    missing = missing_web_stack(env)
    if missing is not None:
        raise Skip(f"landscape serve cannot start here: {missing}")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = ctx.out / "service.log"
    command = [sys.executable, "-m", "landscape", "serve", "--host", "127.0.0.1",
               "--port", str(port), "--device", ctx.device.type]  # fmt: skip
    details: dict[str, Any] = {"command": command[1:], "log": log.name}
    with log.open("w") as sink:
        # its own session: the stop takes its engine workers too; cwd: no .env of the checkout
        proc = subprocess.Popen(
            command, cwd=folder, env=env, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        details["start_s"] = _wait_healthy(proc, base, log)
        problems = _surface_over_rest(ctx, base, folder, details)
    finally:
        details["stop"] = _stop(proc, log)
    details["server_warnings"] = [
        line[:300] for line in log.read_text(errors="replace").splitlines() if "WARNING" in line
    ][:50]
    stop = details["stop"]
    if not stop["clean"]:
        problems.append(f"did not stop cleanly on SIGTERM: {stop}")
    engine = details.get("engine", {})
    summary = (
        f"landscape serve on {ctx.device.type} up in {details['start_s']:.1f} s; "
        f"{GRID}×{GRID} resnet20 surface over REST in {details.get('job_s', float('nan')):.1f} s "
        f"on {engine.get('device', 'n/a')} (compiled {engine.get('compiled', 'n/a')}); "
        f"file {details.get('file_bytes', 0)} bytes; stopped in {stop['seconds']:.1f} s"
    )
    if problems:
        summary += "; " + "; ".join(problems)
    return Result("fail" if problems else "pass", summary, details=details)


def _wait_healthy(proc: subprocess.Popen[bytes], base: str, log: Path) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < START_TIMEOUT_S:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"landscape serve exited with {proc.returncode}: {' | '.join(tail)}")
        with contextlib.suppress(OSError, ValueError):
            if get_json(f"{base}/healthz").get("status") == "ok":
                return time.perf_counter() - started
        time.sleep(0.2)  # a starting process: there is no event to wait on
    raise RuntimeError(f"landscape serve did not answer /healthz in {START_TIMEOUT_S:.0f} s")


def _surface_over_rest(ctx: Context, base: str, folder: Path, details: dict[str, Any]) -> list[str]:
    """POST the surface, poll its job, GET it and its file: what went wrong, in words."""
    import numpy as np

    from landscape import storage as store

    status, body = request("POST", f"{base}/api/surfaces", surface_request(ctx))
    if status not in (200, 202):
        raise RuntimeError(f"POST /api/surfaces: {status} {body[:300]!r}")
    reply = json.loads(body)
    job = reply.get("job") or {}
    surface_id = reply["surface"]["id"] if reply.get("surface") else job["surface_id"]
    details |= {"post_status": status, "job_id": job.get("id"), "surface_id": surface_id}
    started = time.perf_counter()
    while job and job.get("status") in ("queued", "running"):
        if time.perf_counter() - started > JOB_TIMEOUT_S:
            raise RuntimeError(f"job {job['id']} still {job['status']} after {JOB_TIMEOUT_S:.0f} s")
        time.sleep(0.5)  # polling, as a client without SSE does
        job = get_json(f"{base}/api/jobs/{job['id']}")
    details["job_s"] = time.perf_counter() - started
    details["job_status"] = job.get("status", "cached")
    if job and job.get("status") != "done":
        return [f"job {job.get('status')}: {job.get('error')}"]
    problems = []
    data = get_json(f"{base}/api/surfaces/{surface_id}")
    flat = [v for rows in data["values"].values() for v in np.ravel(np.array(rows, dtype=object))]
    details["rest_values"] = len(flat)
    if len(flat) != len(data["values"]) * GRID * GRID:
        problems.append(f"GET gave {len(flat)} values, expected {GRID * GRID} per metric")
    if not all(v is not None and math.isfinite(v) for v in flat):
        problems.append("GET gave missing or non-finite values")
    status, blob = request("GET", f"{base}/api/surfaces/{surface_id}/file", timeout=60)
    details["file_bytes"] = len(blob)
    if status != 200 or not blob.startswith(HDF5_SIGNATURE):
        return [*problems, f"GET …/file: {status}, {blob[:40]!r} is not an HDF5 file"]
    path = folder / "downloaded.h5"
    path.write_bytes(blob)
    surface = store.read_surface(path)
    engine = surface.attrs.get("engine") or {}
    details["engine"] = {
        key: engine.get(key) for key in ("device", "precision", "compiled", "compile_reason")
    }
    if not str(engine.get("device", "")).startswith(ctx.device.type):
        problems.append(f"computed on {engine.get('device')}, not {ctx.device.type}")
    rest = np.array(data["values"]["train_loss"], dtype=float)
    if not np.allclose(rest, surface.values["train_loss"], rtol=1e-6, atol=0):
        problems.append("the downloaded file's train_loss differs from GET's")
    return problems


def _stop(proc: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    """SIGTERM, as docker stop sends; killed (its whole session) when it overstays. Clean: it
    exited in time, through the app's shutdown (uvicorn re-raises the signal once done, so
    the exit status may be the signal's)."""
    started = time.perf_counter()
    clean = True
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            clean = False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # engine workers it left, or itself if stuck
    proc.wait()
    shut_down = "Application shutdown complete" in log.read_text(errors="replace")
    return {
        "returncode": proc.returncode,
        "seconds": time.perf_counter() - started,
        "app_shutdown": shut_down,
        "clean": clean and shut_down and proc.returncode in (0, -signal.SIGTERM),
    }
