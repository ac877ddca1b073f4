"""Who a queued job counts against (in-process): a client is its bearer token, each token with
its own allowance, or its address, read from ``X-Forwarded-For`` only when a trusted proxy
sent it; every job counts as one, a report too, and each refusal says what it counted. A job
whose cancel was asked for never comes back queued (a dead worker's, a lapsed lease's), and a
request for an id whose job is stopping gets a job of its own."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api.app import create_app
from api.db import Job
from api.jobs import JobQueue
from api.quota import client_address, parse_networks
from api.settings import Settings
from tests.api.test_api import TINY, tiny_settings
from tests.api.test_gradient_flow_and_report import TINY_REPORT

TOKENS = [
    {"name": "ana", "token": "ana-secret", "max_active_jobs": 1},
    {"name": "ben", "token": "ben-secret"},  # the per-client default
]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _surface(client: TestClient, size: int, **kwargs: Any) -> Any:
    return client.post("/api/surfaces", json={**TINY, "train_size": size}, **kwargs)


def _queue(client: TestClient) -> JobQueue:
    queue: JobQueue = client.app.state.queue  # type: ignore[attr-defined]
    return queue


# ----------------------------------------------------------------------------- the address


TRUSTED = parse_networks(["10.0.0.0/8", "192.168.1.7"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("127.0.0.1", ["203.0.113.9"], "127.0.0.1"),  # not a proxy: the header is ignored
        ("192.168.1.7", ["203.0.113.9"], "203.0.113.9"),
        ("192.168.1.7", ["1.1.1.1, 203.0.113.9"], "203.0.113.9"),  # left: the client's words
        ("192.168.1.7", ["203.0.113.9, 10.2.3.4"], "203.0.113.9"),  # a chain of our proxies
        ("192.168.1.7", ["1.1.1.1", "203.0.113.9"], "203.0.113.9"),  # two headers, in order
        ("192.168.1.7", ["10.9.9.9"], "10.9.9.9"),  # only proxies: the first one
        ("192.168.1.7", [], "192.168.1.7"),  # no header: the proxy itself
        ("10.0.0.1", ["2001:db8::5"], "2001:db8::5"),
    ],
)
def test_the_address_is_the_nearest_one_no_trusted_proxy_wrote(
    peer: str, forwarded: list[str], expected: str
) -> None:
    assert client_address(peer, forwarded, TRUSTED) == expected


def test_settings_refuse_bad_proxies_and_clashing_tokens() -> None:
    with pytest.raises(ValidationError, match="not an IP address"):
        Settings(trusted_proxies=("10.0.0.0/33",))
    ana = {"name": "ana", "token": "a"}
    with pytest.raises(ValidationError, match="names must differ"):
        Settings(api_tokens=(ana, {"name": "ana", "token": "b"}))
    with pytest.raises(ValidationError, match="same value"):
        Settings(api_token="a", api_tokens=(ana,))


def test_a_forwarded_address_from_an_untrusted_peer_changes_nothing(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path, max_active_jobs_per_client=1, trusted_proxies=("10.0.0.1",))
    with TestClient(create_app(settings)) as c:
        assert _surface(c, 100, headers={"X-Forwarded-For": "203.0.113.1"}).status_code == 202
        spoofed = _surface(c, 101, headers={"X-Forwarded-For": "203.0.113.2"})
        assert spoofed.status_code == 429, spoofed.text
        assert "queued by address testclient" in spoofed.json()["detail"]


# ------------------------------------------------------------------------------- the tokens


@pytest.fixture
def two_tokens(tmp_path: Path) -> Any:
    settings = tiny_settings(
        tmp_path, api_tokens=TOKENS, max_active_jobs_per_client=2, protect_reads=True
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_each_token_has_its_own_allowance(two_tokens: TestClient) -> None:
    ana, ben = _bearer("ana-secret"), _bearer("ben-secret")
    assert _surface(two_tokens, 100, headers=ana).status_code == 202
    refused = _surface(two_tokens, 101, headers=ana)
    assert refused.status_code == 429
    assert "you have 1 jobs queued or running (limit 1 per client)" in refused.json()["detail"]
    assert "queued by token 'ana'" in refused.json()["detail"]
    assert "ana-secret" not in refused.text
    assert [_surface(two_tokens, s, headers=ben).status_code for s in (102, 103, 104)] == [
        202,
        202,
        429,
    ]
    assert _surface(two_tokens, 105, headers=_bearer("eve")).status_code == 401
    assert _surface(two_tokens, 106).status_code == 401
    for headers in (ana, ben):  # reads take any of the tokens
        assert len(two_tokens.get("/api/jobs", headers=headers).json()) == 3
    assert two_tokens.get("/api/jobs").status_code == 401
    stored = {job.client for job in _queue(two_tokens).list()}
    assert stored == {"token:ana", "token:ben"}  # the name, never the secret


def test_a_job_shared_with_another_token_counts_against_who_queued_it(
    two_tokens: TestClient,
) -> None:
    ana, ben = _bearer("ana-secret"), _bearer("ben-secret")
    first = _surface(two_tokens, 100, headers=ben)
    shared = _surface(two_tokens, 100, headers=ana)  # the same request: ben's job
    assert shared.json()["job"]["id"] == first.json()["job"]["id"]
    assert _surface(two_tokens, 101, headers=ana).status_code == 202  # her limit is 1
    assert _surface(two_tokens, 102, headers=ana).status_code == 429
    assert _surface(two_tokens, 103, headers=ben).status_code == 202  # ben's is 2


# ------------------------------------------------------------------------ a report is a job


def test_a_report_counts_as_one_job_and_the_message_counts_what_the_page_shows(
    tmp_path: Path,
) -> None:
    with TestClient(create_app(tiny_settings(tmp_path, max_active_jobs_per_client=2))) as c:
        report = c.post("/api/reports", json=TINY_REPORT)
        assert report.status_code == 202 and report.json()["job"]["progress"]["total"] == 6
        assert _surface(c, 100).status_code == 202  # the report left room for it
        refused = _surface(c, 101)
        assert refused.status_code == 429
        shown = [job for job in c.get("/api/jobs").json() if job["status"] == "queued"]
        detail = refused.json()["detail"]
        assert f"you have {len(shown)} jobs queued or running (limit 2 per client)" in detail
        assert "a report as one" in detail and "address testclient" in detail


def test_the_whole_queue_limit_says_it_counts_every_client(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path, max_active_jobs=2, api_tokens=TOKENS)
    with TestClient(create_app(settings)) as client:
        assert client.post("/api/reports", json=TINY_REPORT, headers=_bearer("ana-secret"))
        assert _surface(client, 100, headers=_bearer("ben-secret")).status_code == 202
        full = _surface(client, 101, headers=_bearer("ben-secret"))
        assert full.status_code == 429
        assert "queue is full (2 queued or running, limit 2): counting every client's jobs, " \
            "a report as one" in full.json()["detail"]  # fmt: skip


# ---------------------------------------------------------------------- cancel and restart


def _running(queue: JobQueue, worker_id: str, lease_left: float) -> Job:
    job = queue.claim(worker_id)
    assert job is not None
    with queue.sessions() as session, session.begin():
        row = session.get(Job, job.id)
        assert row is not None
        row.lease_expires_at = time.time() + lease_left
    return job


def test_a_cancelled_job_whose_worker_died_ends_cancelled(tmp_path: Path) -> None:
    with TestClient(create_app(tiny_settings(tmp_path, cancel_wait_seconds=0.0))) as client:
        queue = _queue(client)
        queued = _surface(client, 100).json()["job"]["id"]
        dead = f"{socket.gethostname()}:999999999:deadbeef"  # this host, no such process
        assert _running(queue, dead, 60).id == queued
        assert client.delete(f"/api/jobs/{queued}").json()["cancel_requested"]
        queue.recover(set())  # what a restarted server does first
        job = client.get(f"/api/jobs/{queued}").json()
        assert job["status"] == "cancelled", job
        surface_id = job["surface_id"]
        assert client.delete(f"/api/surfaces/{surface_id}").status_code == 204
        again = _surface(client, 100)
        assert again.status_code == 202 and again.json()["job"]["id"] != queued


def test_a_cancelled_job_whose_lease_lapsed_is_not_taken_over(tmp_path: Path) -> None:
    with TestClient(create_app(tiny_settings(tmp_path, cancel_wait_seconds=0.0))) as client:
        queue = _queue(client)
        queued = _surface(client, 100).json()["job"]["id"]
        _running(queue, "elsewhere:1:abcd", -1)  # another host's worker, lease lapsed
        client.delete(f"/api/jobs/{queued}")
        assert queue.claim("here:2:beef") is None
        assert client.get(f"/api/jobs/{queued}").json()["status"] == "cancelled"


def test_a_request_for_a_stopping_job_waits_for_a_job_of_its_own(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path, cancel_wait_seconds=0.0)
    with TestClient(create_app(settings)) as client:
        queue = _queue(client)
        worker = "here:3:cafe"
        dying = _surface(client, 100).json()["job"]["id"]
        _running(queue, worker, 60)
        assert client.delete(f"/api/jobs/{dying}").json()["status"] == "running"
        stopped = threading.Timer(0.5, queue.finish, (dying, worker, "cancelled"))
        stopped.start()
        again = _surface(client, 100)
        stopped.join()
        assert again.status_code == 202, again.text
        assert again.json()["job"]["id"] != dying
        assert again.json()["job"]["status"] == "queued"


def test_a_job_that_will_not_stop_is_a_409_to_retry(tmp_path: Path) -> None:
    with TestClient(create_app(tiny_settings(tmp_path, cancel_wait_seconds=0.0))) as client:
        queue = _queue(client)
        queue.stopping_wait_seconds = 0.3
        dying = _surface(client, 100).json()["job"]["id"]
        _running(queue, "here:4:f00d", 60)
        client.delete(f"/api/jobs/{dying}")
        busy = _surface(client, 100)
        assert busy.status_code == 409 and busy.headers["retry-after"]
        assert f"job {dying} for this id is still stopping" in busy.json()["detail"]


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        (
            "API_TOKENS",
            '[{"name": "a b", "token": "s3cret-value"}]',
            "LANDSCAPE_API_TOKENS[0][name]",
        ),
        ("API_TOKENS", '[{"name": "a", "token": "s3cret-value"}', "LANDSCAPE_API_TOKENS is not"),
        ("TRUSTED_PROXIES", '["10.0.0.0/33"]', "'10.0.0.0/33' is not an IP address"),
    ],
)
def test_serve_refuses_a_bad_setting_in_one_line_without_echoing_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
    named: str,
) -> None:
    from landscape.cli import main

    monkeypatch.setenv(f"LANDSCAPE_{name}", value)
    monkeypatch.chdir(tmp_path)  # no .env file here
    code = main(["serve", "--data-dir", str(tmp_path / "d")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and named in err and "\n" not in err, err
    assert "s3cret-value" not in err
