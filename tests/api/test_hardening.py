"""Hostile input in-process: non-finite numbers, big bodies, queue limits, zip bombs, lying
safetensors headers, oversized metadata, server paths and tracebacks in answers, 405 ``Allow``,
an OpenAPI schema that says what the server enforces, and serving open without a token."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from api.app import create_app
from api.db import CheckpointRecord, Job
from api.errors import SafeJSONResponse
from api.guard import find_non_finite
from api.redact import public_error, public_stored_error
from landscape.cli.serve_cmd import open_without_token
from landscape.errors import SpecError
from landscape.models import build
from landscape.sources.checkpoint import save_checkpoint
from tests.api.test_api import DIGITS_SHAPE, TINY, _upload, tiny_settings


def _client(tmp_path: Path, **changes: Any) -> TestClient:
    return TestClient(create_app(tiny_settings(tmp_path / "data", **changes)))


def _strict_json(text: str) -> Any:
    """Parse as a strict client would: NaN/Infinity are not JSON."""

    def refuse(name: str) -> None:
        raise AssertionError(f"non-JSON constant {name} in the answer")

    return json.loads(text, parse_constant=refuse)


# --------------------------------------------------------------------- non-finite numbers

NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" + "0" * 400]


@pytest.mark.parametrize("token", NON_FINITE)
@pytest.mark.parametrize(
    "where",
    [
        '{"model": "mlp-plain", "grid": {"xrange": [-1, %s]}}',
        '{"model": "mlp-plain", "train": {"lr": %s}}',
        '{"model": "mlp-plain", "directions": {"seed": %s}}',
        '{"model": "mlp-plain", "label": "x", "extra": [1, {"deep": %s}]}',
    ],
)
def test_non_finite_numbers_are_a_clean_422(tmp_path: Path, where: str, token: str) -> None:
    with _client(tmp_path) as client:
        response = client.post(
            "/api/surfaces", content=where % token, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, response.text
        detail = _strict_json(response.text)["detail"]
        assert detail[0]["type"] == "finite_number" and detail[0]["loc"][0] == "body"


def test_non_finite_in_hessian_options_is_422(tmp_path: Path) -> None:
    with _client(tmp_path) as client:
        body = '{"top": 3, "train_size": NaN}'
        response = client.post("/api/surfaces/abc/hessian", content=body)
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == [
            "body",
            "train_size",
        ]


def test_find_non_finite_locates_the_number() -> None:
    assert find_non_finite(b'{"a": [1, 2, {"b": NaN}]}') == ["a", 2, "b"]
    assert find_non_finite(b'{"a": [1e308, -2.5]}') is None
    assert find_non_finite(b"not json") is None


def test_every_json_answer_renders_non_finite_as_null() -> None:
    body = SafeJSONResponse({"x": [1.0, float("nan"), float("inf")]}).body
    assert json.loads(body) == {"x": [1.0, None, None]}


# --------------------------------------------------------------------- big bodies


def test_json_body_over_the_limit_is_413_before_parsing(tmp_path: Path) -> None:
    with _client(tmp_path, max_json_bytes=64 * 1024) as client:
        body = {**TINY, "splits": ["train"] * 1_200_000}
        response = client.post("/api/surfaces", json=body)
        assert response.status_code == 413, response.text[:200]
        assert "65536 bytes" in response.json()["detail"]


def test_422_is_bounded_and_echoes_no_input(tmp_path: Path) -> None:
    with _client(tmp_path) as client:
        body = {**TINY, "splits": ["x" * 50] * 1000, "label": "y" * 10_000}
        response = client.post("/api/surfaces", json=body)
        assert response.status_code == 422
        assert len(response.content) < 10_000, len(response.content)
        assert "input" not in response.text and "xxxxxxxxxx" not in response.text
        assert len(response.json()["detail"]) <= 21


# --------------------------------------------------------------------- queue limits


def test_queue_limit_per_client_is_429(tmp_path: Path) -> None:
    with _client(tmp_path, max_active_jobs_per_client=2, max_active_jobs=50) as client:
        codes = [
            client.post("/api/surfaces", json={**TINY, "label": None, "train_size": 100 + i})
            for i in range(3)
        ]
        assert [r.status_code for r in codes] == [202, 202, 429], codes[-1].text
        assert "2 per client" in codes[-1].json()["detail"]
        assert codes[-1].headers["retry-after"]
        # cancelling one frees a slot
        client.delete(f"/api/jobs/{codes[0].json()['job']['id']}")
        again = client.post("/api/surfaces", json={**TINY, "train_size": 150})
        assert again.status_code == 202, again.text


def test_queue_limit_in_total_is_429(tmp_path: Path) -> None:
    with _client(tmp_path, max_active_jobs_per_client=50, max_active_jobs=2) as client:
        for i in range(2):
            assert client.post("/api/surfaces", json={**TINY, "train_size": 100 + i}).is_success
        refused = client.post("/api/surfaces", json={**TINY, "train_size": 102})
        assert refused.status_code == 429 and "queue is full" in refused.json()["detail"]


def test_jobs_list_pages(tmp_path: Path) -> None:
    with _client(tmp_path) as client:
        ids = [
            client.post("/api/surfaces", json={**TINY, "train_size": 100 + i}).json()["job"]["id"]
            for i in range(5)
        ]
        first = client.get("/api/jobs", params={"limit": 2})
        second = client.get("/api/jobs", params={"limit": 2, "offset": 2})
        rest = client.get("/api/jobs", params={"limit": 2, "offset": 4})
        assert first.headers["x-total-count"] == "5"
        pages = [r.json() for r in (first, second, rest)]
        assert [len(p) for p in pages] == [2, 2, 1]
        assert sorted(job["id"] for page in pages for job in page) == sorted(ids)
        assert client.get("/api/jobs", params={"limit": 100_000}).status_code == 422


# --------------------------------------------------------------------- checkpoint uploads


def _deflated(raw: bytes, replace: dict[str, bytes] | None = None) -> bytes:
    """Re-pack a torch zip with every entry deflated (as a zip bomb would be)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = (replace or {}).get(info.filename, src.read(info))
            dst.writestr(info.filename, data, compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def zip_bomb(megabytes: int) -> bytes:
    """A ``.pt`` whose one tensor of zeros unpacks to ``megabytes`` MiB."""
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(megabytes * 1024 * 256)}, buffer)
    return _deflated(buffer.getvalue())


def test_zip_bomb_is_refused_before_loading(tmp_path: Path) -> None:
    bomb = zip_bomb(64)
    assert len(bomb) < 1_000_000
    with _client(tmp_path) as client:
        response = _upload(client, "bomb.pt", bomb)
        assert response.status_code == 413, response.text
        assert "unpacks to 6710" in response.json()["detail"]
        # a legitimate deflated state_dict still loads
        buffer = io.BytesIO()
        torch.save(build("mlp-plain", **DIGITS_SHAPE).state_dict(), buffer)
        ok = _upload(client, "deflated.pt", _deflated(buffer.getvalue()))
        assert ok.status_code == 201, ok.text


def test_safetensors_header_declaring_more_than_the_file_is_422(tmp_path: Path) -> None:
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [1 << 20, 1 << 10], "data_offsets": [0, 1 << 32]}}
    ).encode()
    liar = struct.pack("<Q", len(header)) + header + b"\0" * 64
    with _client(tmp_path) as client:
        response = _upload(client, "liar.safetensors", liar)
        assert response.status_code == 422 and "outside the file" in response.json()["detail"]


def test_checkpoint_metadata_is_small_in_the_listing(tmp_path: Path) -> None:
    path = tmp_path / "ck.pt"
    net = build("mlp-plain", **DIGITS_SHAPE)
    save_checkpoint(
        path,
        net,
        model_name="mlp-plain",
        model_args=DIGITS_SHAPE,
        metadata={"notes": "n" * 1_000_000, "train_loss": 0.5, "seed": "s" * 10_000},
    )
    with _client(tmp_path) as client:
        uploaded = _upload(client, "ck.pt", path.read_bytes())
        assert uploaded.status_code == 201, uploaded.text[:300]
        with client.app.state.sessions() as session:  # type: ignore[attr-defined]
            session.add(
                CheckpointRecord(
                    id="b" * 64,
                    model="mlp-plain",
                    dataset="digits",
                    source="upload",
                    filename="old.pt",
                    details={"model": "m" * 5_000_000, "history": list(range(100_000))},
                )
            )
            session.commit()
        listing = client.get("/api/checkpoints")
        assert listing.status_code == 200 and len(listing.content) < 5_000, len(listing.content)
        mine = next(c for c in listing.json() if c["id"] == uploaded.json()["id"])
        assert mine["metadata"]["train_loss"] == 0.5 and "notes" not in mine["metadata"]
        assert len(mine["metadata"]["seed"]) <= 200


def test_errors_carry_no_server_path(tmp_path: Path) -> None:
    path = tmp_path / "ck.pt"
    save_checkpoint(
        path,
        build("mlp-plain", **DIGITS_SHAPE),
        model_name="mlp-plain",
        model_args=DIGITS_SHAPE,
        metadata={},
    )
    with _client(tmp_path) as client:
        response = _upload(client, "ck.pt", path.read_bytes(), model="resnet20")
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "resnet20" in detail and str(tmp_path) not in detail and "/" not in detail


# --------------------------------------------------------------------- tracebacks and job errors


def test_public_error_is_one_line_with_an_id() -> None:
    try:
        open("/srv/secret/data/x.h5")  # noqa: SIM115
    except OSError as exc:
        message, error_id = public_error(exc)
    assert message == f"internal error (FileNotFoundError) (error id {error_id})"
    message, _ = public_error(SpecError("bad range near /srv/secret/data/grid.h5"))
    assert "/srv" not in message and "grid.h5" in message and "\n" not in message


def test_stored_traceback_is_shown_as_one_line(tmp_path: Path) -> None:
    stored = (
        "Traceback (most recent call last):\n"
        '  File "/opt/venv/lib/python3.11/site-packages/x.py", line 3, in f\n'
        "ValueError: cannot reshape /data/surfaces/ab.h5"
    )
    assert public_stored_error(stored) == "ValueError: cannot reshape ab.h5"
    with _client(tmp_path) as client:
        job_id = client.post("/api/surfaces", json=TINY).json()["job"]["id"]
        with client.app.state.sessions() as session:  # type: ignore[attr-defined]
            job = session.get(Job, job_id)
            assert job is not None
            job.status, job.error = "failed", stored
            session.commit()
        for answer in (client.get(f"/api/jobs/{job_id}").json(), client.get("/api/jobs").json()[0]):
            assert answer["error"] == "ValueError: cannot reshape ab.h5"


# --------------------------------------------------------------------- schema honesty, 405


def test_405_answers_carry_allow(tmp_path: Path) -> None:
    with _client(tmp_path) as client:
        for method, path, expected in [
            ("POST", "/healthz", {"GET"}),
            ("PUT", "/api/surfaces", {"GET", "POST"}),
            ("POST", "/static/app.js", {"GET", "HEAD"}),
        ]:
            response = client.request(method, path)
            assert response.status_code == 405, (method, path)
            assert expected <= set(response.headers["allow"].split(", ")), response.headers


def test_openapi_says_what_the_server_enforces(tmp_path: Path) -> None:
    with _client(tmp_path, api_token="t") as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert "security" not in paths["/api/surfaces"]["get"]
    assert "401" not in paths["/api/jobs/{job_id}"]["get"]["responses"]
    post = paths["/api/surfaces"]["post"]
    assert {"400", "401", "413", "422", "429"} <= set(post["responses"])
    assert "65536 bytes" in post["description"]
    assert "413" in paths["/api/checkpoints"]["post"]["responses"]
    with _client(tmp_path, api_token="t", protect_reads=True) as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert paths["/api/surfaces"]["get"]["security"]


def test_writes_without_token_are_401_before_validation(tmp_path: Path) -> None:
    with _client(tmp_path, api_token="s3cret") as client:
        assert client.post("/api/surfaces", content=b"{not json").status_code == 401
        wrong = client.post("/api/surfaces", json=TINY, headers={"Authorization": "Bearer x"})
        assert wrong.status_code == 401
        ok = client.post("/api/surfaces", json=TINY, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 202


# --------------------------------------------------------------------- serving open


@pytest.mark.parametrize(
    ("host", "token", "allow", "refused"),
    [
        ("127.0.0.1", None, False, False),
        ("localhost", None, False, False),
        ("::1", None, False, False),
        ("0.0.0.0", None, False, True),
        ("192.168.1.5", None, False, True),
        ("0.0.0.0", "t", False, False),
        ("0.0.0.0", None, True, False),
    ],
)
def test_serving_open_without_a_token_is_refused(
    tmp_path: Path, host: str, token: str | None, allow: bool, refused: bool
) -> None:
    settings = tiny_settings(tmp_path, host=host, api_token=token, allow_open=allow)
    assert (open_without_token(settings) is not None) == refused


def test_serve_exits_with_one_line_when_open_without_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from landscape.cli import main

    monkeypatch.delenv("LANDSCAPE_API_TOKEN", raising=False)
    monkeypatch.delenv("LANDSCAPE_ALLOW_OPEN", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env file here
    code = main(["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "d")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "LANDSCAPE_API_TOKEN" in err and "\n" not in err
