"""Hostile input against a real ``landscape serve`` (uvicorn, real sockets, real temp files).

Writes without the token are refused before a byte of their body is read (nothing lands in the
server's TMPDIR, the 401 arrives while the client is still sending); declared and chunked bodies
over their limit are cut off at it; and a run of several hundred hostile requests gets no 5xx
while ``/healthz`` keeps answering within a second and memory stays under twice the idle
server's.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from landscape.models import build
from tests.api.test_api import DIGITS_SHAPE
from tests.api.test_hardening import NON_FINITE, zip_bomb
from tests.server_support import ServeProcess

pytestmark = pytest.mark.slow

TOKEN = "correct-horse-battery-staple"
UPLOAD_LIMIT = 2_000_000


class Server(ServeProcess):
    """``landscape serve`` with a token, no job workers, its TMPDIR pointed at ``spool``."""

    def __init__(self, root: Path) -> None:
        self.spool = root / "spool"
        self.spool.mkdir(parents=True)
        env = {
            **os.environ,
            "TMPDIR": str(self.spool),
            "LANDSCAPE_API_TOKEN": TOKEN,
            "LANDSCAPE_WORKERS": "0",
            "LANDSCAPE_DEVICE": "cpu",
            "LANDSCAPE_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
            "LANDSCAPE_MAX_ACTIVE_JOBS_PER_CLIENT": "5",
        }
        super().__init__(root, env)

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def spooled(self) -> list[Path]:
        """Files in the server's TMPDIR, or in the data folder's upload staging area (read
        while the server creates and removes its staging folders: a vanished one is empty)."""
        found: list[Path] = []
        for folder in (self.spool, self.data / "checkpoints"):
            with contextlib.suppress(FileNotFoundError):
                found += [p for p in folder.rglob("*") if p.is_file()]
        return found


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    started = Server(tmp_path)
    yield started
    started.stop()


class Watcher(threading.Thread):
    """Samples, every few milliseconds, the spool folder, the server's memory and (every 50 ms)
    the latency of ``/healthz``, until stopped."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.spooled: set[str] = set()
        self.max_rss = 0
        self.health: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        last_health = 0.0
        with httpx.Client(timeout=10) as client:
            while not self.halt.is_set():
                self.spooled |= {p.name for p in self.server.spooled()}
                self.max_rss = max(self.max_rss, self.server.rss())
                if time.monotonic() - last_health > 0.05:
                    started = time.monotonic()
                    assert client.get(f"{self.server.url}/healthz").status_code == 200
                    self.health.append(time.monotonic() - started)
                    last_health = time.monotonic()
                time.sleep(0.005)

    def __enter__(self) -> Watcher:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.halt.set()
        self.join(30)


def _raw_request(port: int, head: str, first_bytes: bytes) -> tuple[bytes, bool]:
    """Send ``head`` and the start of a body, then read the answer without sending the rest.
    Returns the status line and whether the rest could still be pushed afterwards."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head.encode() + first_bytes)
        answer = sock.recv(4096)
        try:
            for _ in range(8):
                sock.sendall(b"\0" * (1 << 20))
            still_open = True
        except OSError:
            still_open = False
    return answer.split(b"\r\n", 1)[0], still_open


def _multipart_head(length: int, token: str | None) -> str:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        "POST /api/checkpoints HTTP/1.1\r\nHost: x\r\n"
        f"{auth}Content-Type: multipart/form-data; boundary=B\r\n"
        f"Content-Length: {length}\r\n\r\n"
    )


def test_upload_without_token_is_refused_before_it_is_read(server: Server) -> None:
    with Watcher(server) as watcher:
        start = b'--B\r\nContent-Disposition: form-data; name="file"; filename="x.pt"\r\n\r\n'
        status, _ = _raw_request(server.port, _multipart_head(30_000_000, None), start)
        assert status == b"HTTP/1.1 401 Unauthorized", status
        # the same through a regular client, pushing the whole 30 MB
        try:
            answer = httpx.post(
                f"{server.url}/api/checkpoints",
                files={"file": ("x.pt", os.urandom(30_000_000))},
                data={"model": "mlp-plain"},
                timeout=30,
            )
            assert answer.status_code == 401
        except httpx.HTTPError:
            pass  # the server closed the connection on us: the body was never read
    assert not watcher.spooled, watcher.spooled


def test_declared_and_chunked_bodies_over_the_limit_are_cut_off(server: Server) -> None:
    with Watcher(server) as watcher:
        status, _ = _raw_request(server.port, _multipart_head(30_000_000, TOKEN), b"--B\r\n")
        assert status == b"HTTP/1.1 413 Request Entity Too Large", status

        def chunks() -> Iterator[bytes]:
            yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="x.pt"\r\n\r\n'
            for _ in range(30):
                yield b"\0" * (1 << 20)

        try:
            answer = httpx.post(
                f"{server.url}/api/checkpoints",
                content=chunks(),
                headers={
                    "Authorization": f"Bearer {TOKEN}",
                    "Content-Type": "multipart/form-data; boundary=B",
                },
                timeout=30,
            )
            assert answer.status_code == 413, answer.text
        except httpx.HTTPError:
            pass
        big_json = json.dumps({"splits": ["train"] * 1_200_000}).encode()
        answer = httpx.post(
            f"{server.url}/api/surfaces",
            content=iter([big_json[i : i + 65536] for i in range(0, len(big_json), 65536)]),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            timeout=30,
        )
        assert answer.status_code == 413
    assert max(watcher.health) < 1.0, max(watcher.health)
    assert all(name.startswith("tmp") for name in watcher.spooled), watcher.spooled


# --------------------------------------------------------------------------- the hostile run

Request = tuple[str, str, dict[str, Any]]


def _surface(**changes: Any) -> dict[str, Any]:
    return {
        "model": "mlp-plain",
        "dataset": "digits",
        "train": {"epochs": 1},
        "train_size": 64,
        "grid": {"nx": 5, "ny": 5},
        **changes,
    }


def _pt(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def hostile_requests() -> tuple[list[Request], list[Request]]:
    """(without a valid token, with it): a few hundred requests a careless or hostile client
    might send."""
    json_ct = {"Content-Type": "application/json"}
    writes = [
        ("POST", "/api/surfaces"),
        ("POST", "/api/surfaces/abc/hessian"),
        ("DELETE", "/api/surfaces/abc"),
        ("DELETE", "/api/jobs/abc"),
        ("POST", "/api/checkpoints"),
        ("PUT", "/api/surfaces"),
        ("PATCH", "/api/jobs/abc"),
    ]
    auths: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"bearer {TOKEN}x"},
        {"Authorization": "Bearer " + "a" * 4000},
    ]
    bodies: list[dict[str, Any]] = [
        {"json": _surface()},
        {"content": b"x" * 5_000_000, "headers": {"Content-Length": "5000000"}},
        {"files": {"file": ("x.pt", b"\0" * 3_000_000)}, "data": {"model": "mlp-plain"}},
        {"content": b'{"train": {"lr": NaN}}', "headers": {"Content-Type": "application/json"}},
        {},
    ]
    unauthenticated: list[Request] = []
    for method, path in writes:
        for auth in auths:
            for body in bodies:
                headers = {**body.get("headers", {}), **auth}
                unauthenticated.append((method, path, {**body, "headers": headers}))
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    authed: list[Request] = []
    templates = [
        '{"model": "mlp-plain", "grid": {"xrange": [-1, %s]}}',
        '{"model": "mlp-plain", "train": {"lr": %s}}',
        '{"model": "mlp-plain", "train_size": %s}',
        '{"top": %s}',
    ]
    for template in templates:
        for token in NON_FINITE:
            for path in ("/api/surfaces", "/api/surfaces/" + "a" * 64 + "/hessian"):
                authed.append(
                    ("POST", path, {"content": template % token, "headers": {**bearer, **json_ct}})
                )
    huge = json.dumps({**_surface(), "splits": ["train"] * 1_200_000})
    for _ in range(3):
        authed.append(
            ("POST", "/api/surfaces", {"content": huge, "headers": {**bearer, **json_ct}})
        )
    malformed = [
        b"{",
        b"[]",
        b"null",
        b'"x"',
        b"{}" * 1000,
        b"[" * 20000 + b"]" * 20000,
        b'{"model": "\\ud800"}',
        b"\xff\xfe",
        json.dumps({"a": "b" * 60000}).encode(),
        json.dumps(_surface(grid={"nx": 10**9, "ny": 10**9})).encode(),
        json.dumps(_surface(label="x" * 100000)).encode()[:65000],
        json.dumps(_surface(model="../../etc/passwd")).encode(),
        json.dumps(_surface(checkpoint="../" * 20 + "etc/passwd")).encode(),
    ]
    for content in malformed:
        for ct in ("application/json", "text/plain", "application/x-www-form-urlencoded"):
            authed.append(
                (
                    "POST",
                    "/api/surfaces",
                    {"content": content, "headers": {**bearer, "Content-Type": ct}},
                )
            )
    authed.append(
        (
            "POST",
            "/api/surfaces",
            {"content": b"{}", "headers": {**bearer, "Content-Length": "abc"}},
        )
    )
    traversal = [
        "../../etc/passwd",
        "..%2f..%2fetc%2fpasswd",
        "%2e%2e/%2e%2e/",
        "a" * 5000,
        "..\\..\\windows",
        "%00",
        "abc%00def",
        "{id}",
        "' OR 1=1 --",
        "%ff%fe",
    ]
    for bad in traversal:
        for path in (
            f"/api/surfaces/{bad}",
            f"/api/surfaces/{bad}/file",
            f"/api/surfaces/{bad}/html",
            f"/api/surfaces/{bad}/hessian",
            f"/api/jobs/{bad}",
            f"/api/jobs/{bad}/events",
            f"/static/{bad}",
            f"/{bad}",
        ):
            authed.append(("GET", path, {"headers": bearer}))
        authed.append(("DELETE", f"/api/surfaces/{bad}", {"headers": bearer}))
    for query in (
        "limit=-1",
        "limit=abc",
        "limit=1e999",
        "offset=-5",
        "offset=99999999999999",
        "limit=0",
        "limit=NaN",
        "limit=500&offset=1000000",
    ):
        authed.append(("GET", f"/api/jobs?{query}", {"headers": bearer}))
    state = build("mlp-plain", **DIGITS_SHAPE).state_dict()
    header = json.dumps({"w": {"dtype": "F32", "shape": [1 << 30], "data_offsets": [0, 1 << 32]}})
    uploads: list[tuple[str, bytes, str]] = [
        ("bomb.pt", zip_bomb(256), "mlp-plain"),
        ("ok.pt", _pt(state), "mlp-plain"),
        ("wrong.pt", _pt(state), "resnet20"),
        ("liar.safetensors", struct.pack("<Q", len(header)) + header.encode(), "mlp-plain"),
        ("evil.pt", b"cos\nsystem\n(S'touch /tmp/pwned'\ntR.", "mlp-plain"),
        ("empty.pt", b"", "mlp-plain"),
        ("../../x.pt", _pt(state), "mlp-plain"),
        ("x.exe", b"MZ", "mlp-plain"),
        ("noise.pt", os.urandom(100_000), "mlp-plain"),
    ]
    for name, content, model in uploads:
        for dataset in ("digits", "../../etc", "x" * 500):
            authed.append(
                (
                    "POST",
                    "/api/checkpoints",
                    {
                        "files": {"file": (name, content)},
                        "data": {"model": model, "dataset": dataset},
                        "headers": bearer,
                    },
                )
            )
    for i in range(12):  # more jobs than one client may queue
        authed.append(
            ("POST", "/api/surfaces", {"json": _surface(train_size=100 + i), "headers": bearer})
        )
    authed.append(
        (
            "POST",
            "/api/surfaces",
            {
                "json": _surface(grid={"nx": 5, "ny": 5, "xrange": [-1e300, 1e300]}),
                "headers": bearer,
            },
        )
    )
    return unauthenticated, authed


def _fire(server: Server, requests: list[Request]) -> list[tuple[Request, int | str]]:
    def one(request: Request) -> tuple[Request, int | str]:
        method, path, kwargs = request
        try:
            with httpx.Client(base_url=server.url, timeout=20) as client:
                return request, client.request(method, path, **kwargs).status_code
        except httpx.HTTPError as exc:  # refused bodies may be cut off mid-send
            return request, type(exc).__name__

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, requests))


def test_hostile_run_has_no_5xx_and_health_stays_fast(server: Server) -> None:
    unauthenticated, authed = hostile_requests()
    assert len(unauthenticated) + len(authed) >= 400
    idle = server.rss()
    with Watcher(server) as watcher:
        refused = _fire(server, unauthenticated)
        spooled_before_auth = set(watcher.spooled)
        answered = _fire(server, authed)
    assert not spooled_before_auth, spooled_before_auth
    codes = [code for _, code in refused]
    assert all(code in (401, 405) or isinstance(code, str) for code in codes), codes
    assert sum(code == 401 for code in codes) > len(codes) // 2
    errors = [
        (r[0], r[1][:80], code) for r, code in answered if isinstance(code, int) and code >= 500
    ]
    assert not errors, errors
    cut = [(r[0], r[1][:80]) for r, code in answered if isinstance(code, str)]
    assert len(cut) <= 3, cut  # only the three 10 MB bodies may be cut off mid-send
    assert max(watcher.health) < 1.0, max(watcher.health)
    assert watcher.max_rss < 2 * idle, (watcher.max_rss, idle)
    jobs = httpx.get(f"{server.url}/api/jobs", timeout=10)
    assert jobs.status_code == 200 and len(jobs.json()) <= 5  # the per-client queue limit
    for job in jobs.json():
        assert "Traceback" not in (job["error"] or "") and str(server.data) not in json.dumps(job)
    listing = httpx.get(f"{server.url}/api/checkpoints", timeout=10)
    assert len(listing.content) < 20_000
