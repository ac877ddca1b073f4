"""Shared set-up of the browser tests: a real ``landscape serve`` subprocess on a free port
(fresh data folder, CPU, tiny jobs) and Debian's Chromium driven by Playwright.

Every page opened through the ``page`` or ``open_page`` fixtures fails its test on an uncaught
JavaScript error and on any request to a host other than the server (the page, its plots and
/docs must work offline).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ROOT = Path(__file__).resolve().parent.parent
JOB_TIMEOUT_MS = 150_000  # a tiny job; generous because CI machines are shared and slow
UI_TIMEOUT_MS = 30_000

# The second surface of the comparison, requested through the API (the first comes from the
# form). Small on purpose: a few seconds on one CPU core.
SECOND_SURFACE: dict[str, Any] = {
    "model": "mlp-residual",
    "dataset": "digits",
    "train": {"epochs": 1},
    "train_size": 300,
    "grid": {"nx": 7, "ny": 7, "xrange": [-1, 1], "yrange": [-1, 1]},
    "directions": {"normalization": "filter", "ignore": "biasbn", "seed": 1},
    "label": "mlp-residual (browser test)",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def post_json(url: str, body: dict[str, Any]) -> Any:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def wait_for_job(base: str, job_id: str, timeout: float = JOB_TIMEOUT_MS / 1000) -> str:
    """Follow the job's server-sent events until its final event; return that event's name."""
    url = f"{base}/api/jobs/{job_id}/events"
    with urllib.request.urlopen(url, timeout=timeout) as stream:
        for raw in stream:
            line = raw.decode().strip()
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
                if event in ("done", "failed", "cancelled"):
                    return event
    return get_json(f"{base}/api/jobs/{job_id}")["status"]  # stream ended without a final event


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `landscape serve` (API + page + one in-process worker) on a free port."""
    data_dir = tmp_path_factory.mktemp("browser-data")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        # Fast and quiet on a shared CPU: no torch.compile, one engine process, quick polling.
        "LANDSCAPE_DEVICE": "cpu",
        "LANDSCAPE_ENGINE_WORKERS": "1",
        "LANDSCAPE_ENGINE_COMPILE": "false",
        "LANDSCAPE_PROGRESS_EVERY_SECONDS": "0",
        "LANDSCAPE_EVENTS_POLL_SECONDS": "0.1",
        "LANDSCAPE_POLL_SECONDS": "0.1",
        "LANDSCAPE_MAX_GRID_POINTS": "2000",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("LANDSCAPE_API_TOKEN", None)
    log_path = data_dir / "serve.log"
    script = Path(sys.executable).with_name("landscape")  # the venv's console script
    launcher = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "import sys; from landscape.cli import main; sys.exit(main())"]
    )
    command = [
        *launcher, "serve",
        "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir),
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"landscape serve exited with {process.returncode}:\n{log_path.read_text()}"
                )
            try:
                if get_json(f"{base}/healthz", timeout=1)["status"] == "ok":
                    break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"landscape serve did not answer /healthz in 60 s:\n{log_path.read_text()}"
                )
            time.sleep(0.2)  # polling a starting process: there is no event to wait on
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (`make test` does it via "
            "scripts/ensure-test-tools.sh)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


def _guard(context: Any, base: str, errors: list[str]) -> None:
    """Abort and record any request that leaves the server (CDNs, clouds, fonts)."""

    def outside(url: str) -> bool:
        return not url.startswith((base, "data:", "blob:", "about:"))

    def refuse(route: Any) -> None:
        errors.append(f"request left the server: {route.request.url}")
        route.abort()

    context.route(outside, refuse)


@pytest.fixture
def open_page(browser: Any, server: str) -> Iterator[Callable[..., Any]]:
    """``open_page(width, height)``: a fresh page; uncaught JS errors and requests to other
    hosts fail the test that caused them."""
    contexts: list[Any] = []
    errors: list[str] = []

    def make(width: int = 1280, height: int = 900) -> Any:
        context = browser.new_context(viewport={"width": width, "height": height})
        _guard(context, server, errors)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        page.on("pageerror", lambda error: errors.append(f"JavaScript error: {error}"))
        return page

    yield make
    for context in contexts:
        context.close()
    assert not errors, errors


@pytest.fixture
def page(open_page: Callable[..., Any]) -> Any:
    return open_page()


@pytest.fixture(scope="session")
def state() -> dict[str, Any]:
    """Ids shared between tests (the form's surface is reused by the comparison)."""
    return {}


def surface_id_of(reply: dict[str, Any]) -> str:
    """The surface a POST /api/surfaces reply names (cached surface or the job filling it)."""
    return str((reply["surface"] or {}).get("id") or reply["job"]["surface_id"])


def ensure_surface(base: str, body: dict[str, Any]) -> str:
    """POST a request and wait until its surface is complete; its id."""
    reply = post_json(f"{base}/api/surfaces", body)
    if reply["job"] and reply["job"]["status"] != "done":
        assert wait_for_job(base, reply["job"]["id"]) == "done"
    return surface_id_of(reply)


def surface_shape(page: Any, selector: str) -> list[Any]:
    return page.evaluate(
        """(sel) => { const d = document.querySelector(sel); const t = d.data[0];
                     return [t.type, t.z.length, t.z[0].length]; }""",
        selector,
    )
