"""``GET /api/config`` shows the caller the allowance its submissions count against: its own
token's limit and jobs, never another token's secret or quota; and what the limit counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from api.app import create_app
from api.quota import COUNTS
from tests.api.test_api import TINY, tiny_settings

TOKENS = [
    {"name": "ana", "token": "ana-secret", "max_active_jobs": 2},
    {"name": "ben", "token": "ben-secret", "max_active_jobs": 5},
]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _surface(client: TestClient, size: int, headers: dict[str, str]) -> Any:
    return client.post("/api/surfaces", json={**TINY, "train_size": size}, headers=headers)


def test_each_token_sees_its_own_quota_and_the_one_enforced(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path, api_tokens=TOKENS, max_active_jobs_per_client=3)
    ana, ben = _bearer("ana-secret"), _bearer("ben-secret")
    with TestClient(create_app(settings)) as client:
        assert _surface(client, 100, ana).status_code == 202
        seen = client.get("/api/config", headers=ana)
        assert seen.json()["quota"] == {
            "client": "token 'ana'",
            "max_active_jobs": 2,
            "active_jobs": 1,
            "counts": COUNTS,
        }
        assert "ben" not in seen.text and "secret" not in seen.text
        assert client.get("/api/config", headers=ben).json()["quota"] == {
            "client": "token 'ben'",
            "max_active_jobs": 5,
            "active_jobs": 0,
            "counts": COUNTS,
        }
        # the limit shown is the one the queue applies to ana
        assert _surface(client, 101, ana).status_code == 202
        refused = _surface(client, 102, ana)
        assert refused.status_code == 429, refused.text
        assert "(limit 2 per client)" in refused.json()["detail"]
        assert client.get("/api/config", headers=ana).json()["quota"]["active_jobs"] == 2
        anonymous = client.get("/api/config").json()["quota"]
        assert anonymous["max_active_jobs"] is None and anonymous["client"] is None
        wrong = client.get("/api/config", headers=_bearer("eve")).json()["quota"]
        assert wrong == anonymous


def test_a_server_without_tokens_shows_the_address_allowance(tmp_path: Path) -> None:
    with TestClient(create_app(tiny_settings(tmp_path, max_active_jobs_per_client=4))) as client:
        assert _surface(client, 100, {}).status_code == 202
        quota = client.get("/api/config").json()["quota"]
        assert quota == {
            "client": "address testclient",
            "max_active_jobs": 4,
            "active_jobs": 1,
            "counts": "jobs queued or running; a report counts as one",
        }


def test_protected_reads_take_the_token_from_the_query_too(tmp_path: Path) -> None:
    """The page's EventSource cannot send headers; its config read carries the same token."""
    settings = tiny_settings(tmp_path, api_tokens=TOKENS, protect_reads=True)
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/config").status_code == 401
        quota = client.get("/api/config", params={"access_token": "ben-secret"}).json()["quota"]
        assert (quota["client"], quota["max_active_jobs"]) == ("token 'ben'", 5)
