"""Budgets against a real ``landscape serve`` (uvicorn, one in-process job worker, as shipped):
an over-budget report, huge and bogus model widths and a duplicated Content-Type are refused
before anything is queued, while the server's memory (its process and children) stays within
1.5× of idle and ``/healthz`` answers within 100 ms throughout."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server_support import HealthSampler, ServeProcess, family_rss

pytestmark = pytest.mark.slow

MLP_PAIR = [["mlp-residual", "mlp-plain"]]
SMALL = {"pairs": MLP_PAIR, "seeds": [0], "epochs": 1, "train_size": 96, "ranges": [[0.25, 3]]}


class Server(ServeProcess):
    """``landscape serve`` with its default in-process worker: whatever it queued would run."""

    def __init__(self, root: Path) -> None:
        env = {**os.environ, "LANDSCAPE_DEVICE": "cpu", "LANDSCAPE_WORKERS": "1"}
        env.pop("LANDSCAPE_API_TOKEN", None)
        super().__init__(root, env)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    started = Server(tmp_path)
    yield started
    started.stop()


def _raw_post(port: int, path: str, body: bytes, content_types: list[str]) -> str:
    """The status line of a POST sent with each of ``content_types`` as its own header."""
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"Content-Type: {ct}\r\n" for ct in content_types) + "Connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode() + body)
        return sock.recv(4096).split(b"\r\n", 1)[0].decode()


def test_over_budget_and_huge_requests_are_refused_before_queueing(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        # One costing first: a fresh server's first allocation-heavy request, of any kind,
        # runs Python's first full garbage collection of the start-up heap (a few hundred ms
        # on a loaded 2-core box), which is no cost of a budget check.
        warm_up = client.post("/api/reports", json={"ranges": [[1.0, 201]]})
        assert warm_up.status_code == 422 and "LANDSCAPE_MAX_JOB_FLOPS" in warm_up.text
        idle = family_rss(server.proc.pid)
        refusals: list[tuple[dict[str, Any], str]] = [
            (  # the documented recipe, but 6 seeds of ResNet-110 on 201×201 grids
                {
                    "pairs": [["resnet110", "resnet110-noshort"]],
                    "seeds": list(range(6)),
                    "ranges": [[1.0, 201]],
                },
                "LANDSCAPE_MAX_JOB_FLOPS",
            ),
            ({**SMALL, "model_args": {"width": 1_000_000}}, "must be in [1, 1024]"),
            ({**SMALL, "model_args": {"width": 30_000}}, "must be in [1, 1024]"),
            ({**SMALL, "model_args": {"width": 2**70}}, "an integer of 71 bits"),
            ({**SMALL, "model_args": {"bogus": 1}}, "arguments: activation, depth, init, width"),
            ({**SMALL, "model_args": {"depth": -5}}, "must be in [1, 64]"),
            (  # 134 M parameters, costed on the meta device: never allocated
                {**SMALL, "model_args": {"depth": 64, "width": 1024}},
                "LANDSCAPE_MAX_MODEL_PARAMS",
            ),
            ({**SMALL, "epochs": "1"}, "valid integer"),
        ]
        nan_report = json.dumps({**SMALL, "ranges": [[0.25, 3]]}).replace("0.25", "NaN")
        with HealthSampler(server) as watcher:
            for body, needle in refusals:
                answer = client.post("/api/reports", json=body)
                assert answer.status_code == 422 and needle in answer.text, (body, answer.text)
            for path in ("/api/reports", "/api/surfaces"):
                status = _raw_post(
                    server.port, path, nan_report.encode(), ["application/json", "text/plain"]
                )
                assert status == "HTTP/1.1 400 Bad Request", (path, status)
            time.sleep(1.0)  # a queued job would have been claimed by now
        assert client.get("/api/jobs").json() == []
        assert client.get("/api/reports").json() == []
    reports = server.data / "reports"
    assert not reports.exists() or not list(reports.iterdir())
    assert watcher.max_rss < 1.5 * idle, (watcher.max_rss, idle)
    assert len(watcher.health) > 5 and max(watcher.health) < 0.1, max(watcher.health)
