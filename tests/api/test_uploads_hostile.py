"""Hostile uploads and slow clients in-process, one test per finding of "a budget on every
job": an ONNX memory bomb refused before it runs (422 naming the node and the bound), parser
failures on uploads as 422s (a safetensors header nested 200,000 deep, a zip end record
claiming several disks, a pickle nesting lists 200,000 deep), ``.pt`` re-uploads compared by
model and data set, the HDF5 download of a damaged surface as 410, and the head and body
timeouts (the protocol on a real socket, the middleware through ASGI)."""

from __future__ import annotations

import asyncio
import io
import socket
import struct
import threading
import time
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import uvicorn
from fastapi.testclient import TestClient

from api.app import create_app
from api.timeouts import BodyTimeout, HeadTimeoutProtocol
from landscape.models import build
from landscape.sources.checkpoint import FORMAT
from tests.api.test_api import DIGITS_SHAPE, TINY, run_all, tiny_settings
from tests.api.test_api_process import free_port, wait_for


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(tiny_settings(tmp_path / "data"))) as test_client:
        yield test_client


def _upload(client: TestClient, name: str, content: bytes, **form: str) -> httpx.Response:
    return client.post(
        "/api/checkpoints",
        files={"file": (name, content, "application/octet-stream")},
        data={"model": "mlp-plain", "dataset": "digits", **form},
    )


def _state_dict(model: str) -> bytes:
    buffer = io.BytesIO()
    torch.save(build(model, **DIGITS_SHAPE).state_dict(), buffer)
    return buffer.getvalue()


# --------------------------------------------------------------------------- ONNX (finding 3)


def digits_graph_with(heavy: list[Any], name: str) -> bytes:
    """An ONNX digits classifier (``flatten(x) @ w``) whose logits get ``sum(name)`` added:
    the shape of the finding's upload, ``heavy`` being the nodes computing ``name``."""
    from onnx import TensorProto, helper

    nodes = [
        *heavy,
        helper.make_node("Flatten", ["x"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w"], ["logits"], name="head"),
        helper.make_node("ReduceSum", [name], ["total"], keepdims=0, name="sum"),
        helper.make_node("Add", ["logits", "total"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes, "bomb",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, [64, 10], [0.0] * 640)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


def test_an_onnx_memory_bomb_is_refused_naming_the_node_and_the_bound(client: TestClient) -> None:
    pytest.importorskip("onnx2torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from tests.sources.test_onnx_import import _filled

    raw = digits_graph_with(_filled("big", [16384, 16384]), "big")  # 1 GiB of float32
    assert len(raw) < 3000
    response = _upload(client, "bomb.onnx", raw)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "node 'fill_big' (ConstantOfShape)" in detail and "elements per tensor" in detail
    assert client.get("/api/checkpoints").json() == []


# --------------------------------------------------------------------------- parsers (finding 4)


def test_a_deeply_nested_safetensors_header_is_a_422(client: TestClient) -> None:
    header = b"[" * 200_000
    response = _upload(client, "deep.safetensors", struct.pack("<Q", len(header)) + header)
    assert response.status_code == 422, response.text
    assert "safetensors header is nested too deeply" in response.json()["detail"]


def test_a_zip_end_record_claiming_several_disks_is_a_422(client: TestClient) -> None:
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, 0, 2)  # zip64 locator: 2 disks
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0, 0, 0, 0, 0)
    response = _upload(client, "disks.pt", b"junk" + locator + end)
    assert response.status_code == 422, response.text
    assert "not a readable zip archive" in response.json()["detail"]


def _deep_pickle_checkpoint(depth: int) -> bytes:
    """Our checkpoint format, its metadata holding lists nested ``depth`` deep: pickle builds
    them with a loop (no recursion), so they load; whatever walks them recursively fails."""
    payload = {
        "format": FORMAT,
        "model": "mlp-plain",
        "model_args": {},
        "state_dict": build("mlp-plain", **DIGITS_SHAPE).state_dict(),
        "metadata": {"train_spec": "PLACEHOLDER_X"},  # a key listings show
    }
    buffer, out = io.BytesIO(), io.BytesIO()
    torch.save(payload, buffer)
    nested = b"]" * depth + b"a" * (depth - 1)  # EMPTY_LIST × depth, then APPEND × (depth - 1)
    with zipfile.ZipFile(buffer) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                needle = b"X\x0d\x00\x00\x00PLACEHOLDER_X"  # BINUNICODE, 13 bytes
                assert needle in data
                data = data.replace(needle, nested)
            dst.writestr(info.filename, data)
    return out.getvalue()


def test_a_pickle_nesting_lists_200000_deep_is_stored_with_its_metadata_cut(
    client: TestClient,
) -> None:
    response = _upload(client, "deep.pt", _deep_pickle_checkpoint(200_000))
    assert response.status_code == 201, response.text
    kept = response.json()["metadata"]["train_spec"]
    assert len(str(kept)) < 100  # cut to a few levels, never walked whole


# --------------------------------------------------------------------------- re-uploads (finding 8)


def test_pt_reuploads_compare_model_and_dataset(client: TestClient) -> None:
    """resnet20 and resnet20-noshort share every tensor name and shape: the same bytes fit
    both, which is exactly why one id (their digest) must not stand for both."""
    raw = _state_dict("resnet20")
    first = _upload(client, "net.pt", raw, model="resnet20")
    assert first.status_code == 201, first.text
    again = _upload(client, "net.pt", raw, model="resnet20")
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]

    other_model = _upload(client, "net.pt", raw, model="resnet20-noshort")
    assert other_model.status_code == 422, other_model.text
    assert "already checkpoint" in other_model.json()["detail"]
    assert "'resnet20'" in other_model.json()["detail"]

    other_data = _upload(client, "net.pt", raw, model="resnet20", dataset="mnist")
    assert other_data.status_code == 201, other_data.text  # checked for it, as ONNX uploads are
    assert other_data.json()["dataset"] == "mnist" and other_data.json()["id"] == first.json()["id"]
    listed = client.get("/api/checkpoints").json()
    assert [(c["model"], c["dataset"]) for c in listed] == [("resnet20", "mnist")]

    mlp = _state_dict("mlp-plain")
    assert _upload(client, "mlp.pt", mlp).status_code == 201
    refit = _upload(client, "mlp.pt", mlp, dataset="mnist")  # 64 inputs do not fit 28 × 28
    assert refit.status_code == 422, refit.text


# --------------------------------------------------------------------------- download (finding 9)


def test_the_file_of_a_damaged_surface_is_410_like_its_other_routes(client: TestClient) -> None:
    surface_id = client.post("/api/surfaces", json=TINY).json()["job"]["surface_id"]
    run_all(client)
    assert client.get(f"/api/surfaces/{surface_id}/file").status_code == 200
    path = client.app.state.settings.surfaces_dir / f"{surface_id}.h5"  # type: ignore[attr-defined]
    blob = path.read_bytes()
    for damaged in (blob[: len(blob) // 3], blob[:512] + bytes(len(blob) - 1024) + blob[-512:]):
        path.write_bytes(damaged)
        assert client.get(f"/api/surfaces/{surface_id}").status_code == 410
        download = client.get(f"/api/surfaces/{surface_id}/file")
        assert download.status_code == 410, download.status_code
        assert "unreadable" in download.json()["detail"]


# --------------------------------------------------------------------------- timeouts (finding 6)


def test_the_app_installs_the_body_timeout(tmp_path: Path) -> None:
    app = create_app(tiny_settings(tmp_path / "data"))
    assert app.user_middleware[0].cls is BodyTimeout  # outermost of the app's own


def _multipart_start() -> bytes:
    return (
        b'--B\r\nContent-Disposition: form-data; name="model"\r\n\r\nmlp-plain\r\n'
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="x.pt"\r\n\r\n'
    )


async def _post_slowly(app: Any, chunks: AsyncIterator[bytes]) -> tuple[int, float]:
    started = time.monotonic()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.post(
            "/api/checkpoints",
            content=chunks,
            headers={"Content-Type": "multipart/form-data; boundary=B"},
        )
    return response.status_code, time.monotonic() - started


def test_a_trickling_or_stalled_body_is_answered_408(tmp_path: Path) -> None:
    app = BodyTimeout(
        create_app(tiny_settings(tmp_path / "data")), idle_s=0.5, grace_s=0.5, min_bytes_per_s=1e4
    )

    async def trickle() -> AsyncIterator[bytes]:
        yield _multipart_start()
        for _ in range(100):  # 10 bytes a second: far under the minimum rate
            await asyncio.sleep(0.1)
            yield b"\0"

    async def stall() -> AsyncIterator[bytes]:
        yield _multipart_start() + b"\0" * 100_000  # quick at first: ahead of the rate
        await asyncio.sleep(5)
        yield b"--B--\r\n"

    for body in (trickle, stall):
        status, elapsed = asyncio.run(_post_slowly(app, body()))
        assert status == 408, body.__name__
        assert elapsed < 3.0, (body.__name__, elapsed)


def test_after_the_body_receive_is_passed_through_untimed() -> None:
    """A streaming response waits on ``receive`` for the client's disconnect: not timed."""
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((await receive())["type"])  # the (empty) body
        seen.append((await receive())["type"])  # then the disconnect, long after the idle limit
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    messages = iter([{"type": "http.request", "body": b"", "more_body": False}])

    async def receive() -> dict[str, Any]:
        message = next(messages, None)
        if message is None:
            await asyncio.sleep(0.5)
            return {"type": "http.disconnect"}
        return message

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    timed = BodyTimeout(app, idle_s=0.1, grace_s=0.1, min_bytes_per_s=1)
    asyncio.run(timed({"type": "http", "method": "GET", "path": "/"}, receive, send))
    assert seen == ["http.request", "http.disconnect"] and sent[0]["status"] == 200


class _QuickHeads(HeadTimeoutProtocol):
    head_timeout_s = 0.5


@pytest.fixture
def quick_server() -> Iterator[int]:
    """uvicorn on a real socket with the head timeout at half a second."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    port = free_port()
    config = uvicorn.Config(app, port=port, http=_QuickHeads, lifespan="off", log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "uvicorn start")
    yield port
    server.should_exit = True
    thread.join(10)


def _read_until_closed(sock: socket.socket) -> bytes:
    answer = b""
    while chunk := sock.recv(4096):
        answer += chunk
    return answer


def test_a_slow_request_head_is_answered_408_and_closed(quick_server: int) -> None:
    with socket.create_connection(("127.0.0.1", quick_server), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        answer = _read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert 0.4 < time.monotonic() - started < 3.0
    with socket.create_connection(("127.0.0.1", quick_server), timeout=5) as sock:
        assert _read_until_closed(sock).startswith(b"HTTP/1.1 408 ")  # silent from the start
    with socket.create_connection(("127.0.0.1", quick_server), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # a whole head: answered
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
        time.sleep(0.7)  # longer than the head timeout, idle between requests: still open
        sock.sendall(b"GET / HTTP/1.1\r\n")  # the next head, left unfinished
        started = time.monotonic()
        answer = _read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert time.monotonic() - started < 3.0
