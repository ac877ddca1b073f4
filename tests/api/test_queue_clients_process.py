"""Per-client queue limits against a real ``landscape serve`` (uvicorn, real sockets): a client
on loopback cannot buy more jobs by naming new addresses in ``X-Forwarded-For``, while the
addresses a trusted proxy forwards are clients of their own, and a restart on the same store
keeps every count (tokens, each with its own allowance: tests/api/test_queue_clients.py)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator

import httpx
import pytest

from tests.api.test_api import TINY
from tests.server_support import ServeProcess

pytestmark = pytest.mark.slow

PROXY = "127.0.0.2"  # a loopback address of its own: the trusted proxy's


def _env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDSCAPE_")}
    env.update(
        LANDSCAPE_WORKERS="0",
        LANDSCAPE_DEVICE="cpu",
        LANDSCAPE_MAX_ACTIVE_JOBS_PER_CLIENT="2",
        **{f"LANDSCAPE_{name.upper()}": value for name, value in settings.items()},
    )
    return env


def _via_proxy(server: ServeProcess) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=PROXY)
    return httpx.Client(base_url=server.url, timeout=60, transport=transport)


def _post(client: httpx.Client, size: int, **headers: str) -> httpx.Response:
    return client.post("/api/surfaces", json={**TINY, "train_size": size}, headers=headers)


@pytest.fixture(scope="module")
def behind_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    root = tmp_path_factory.mktemp("proxy")
    server = ServeProcess(root, _env(trusted_proxies=json.dumps([PROXY])))
    yield server
    server.stop()


def test_a_forwarded_address_from_loopback_buys_no_jobs(behind_proxy: ServeProcess) -> None:
    with httpx.Client(base_url=behind_proxy.url, timeout=60) as client:
        codes = [
            _post(client, 100 + i, **{"X-Forwarded-For": f"203.0.113.{i}"}).status_code
            for i in range(4)
        ]
        assert codes == [202, 202, 429, 429]
        refused = _post(client, 110, **{"X-Forwarded-For": "203.0.113.99"})
        assert "queued by address 127.0.0.1" in refused.json()["detail"]


def test_each_address_a_trusted_proxy_forwards_is_its_own_client(
    behind_proxy: ServeProcess,
) -> None:
    with _via_proxy(behind_proxy) as client:
        ana = {"X-Forwarded-For": "198.51.100.1"}
        assert [_post(client, 120 + i, **ana).status_code for i in range(3)] == [202, 202, 429]
        detail = _post(client, 130, **ana).json()["detail"]
        assert "you have 2 jobs" in detail and "address 198.51.100.1" in detail
        # a client behind the same proxy (or tunnel) has an allowance of its own
        assert _post(client, 131, **{"X-Forwarded-For": "198.51.100.2"}).status_code == 202
        # and one naming another address in front of the proxy's entry is still itself
        spoof = {"X-Forwarded-For": "198.51.100.77, 198.51.100.1"}
        assert _post(client, 132, **spoof).status_code == 429


def test_a_restart_on_the_same_store_keeps_the_counts(behind_proxy: ServeProcess) -> None:
    carl = {"X-Forwarded-For": "198.51.100.3"}
    with _via_proxy(behind_proxy) as client:
        assert [_post(client, 140 + i, **carl).status_code for i in range(2)] == [202, 202]
        queued = len(client.get("/api/jobs").json())
    behind_proxy.proc.send_signal(signal.SIGTERM)  # a graceful stop, then a new process
    assert behind_proxy.proc.wait(60) is not None
    behind_proxy.stop()
    restarted = ServeProcess(behind_proxy.data.parent, _env(trusted_proxies=json.dumps([PROXY])))
    try:
        with _via_proxy(restarted) as client:
            assert len(client.get("/api/jobs").json()) == queued
            refused = _post(client, 142, **carl)
            assert refused.status_code == 429, refused.text
            assert "you have 2 jobs" in refused.json()["detail"]
    finally:
        restarted.stop()
