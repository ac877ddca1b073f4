"""ONNX uploads through the service: a good graph is checked at upload, listed as an ``onnx``
checkpoint, and its surface completes through the surface runner with the check report in the
file; custom operators, malformed graphs and inexact conversions are 4xx with a JSON message;
no step unpickles or loads code."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnx")
onnx2torch = pytest.importorskip("onnx2torch")
pytest.importorskip("onnxruntime")

from fastapi.testclient import TestClient  # noqa: E402
from onnx import helper  # noqa: E402

from api.app import create_app  # noqa: E402
from landscape import storage as store  # noqa: E402
from landscape.data import load_dataset  # noqa: E402
from landscape.engine.evaluator import reference_evaluate  # noqa: E402
from landscape.sources.onnx_import import load_onnx_model  # noqa: E402
from tests.api.test_api import run_all, tiny_settings  # noqa: E402
from tests.sources.test_onnx_import import SAMPLE, SmallCNN, export, save, tiny_graph  # noqa: E402


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(tiny_settings(tmp_path / "data"))) as test_client:
        yield test_client


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = SmallCNN()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    return export(model, tmp_path / "net.onnx")


def _upload(client: TestClient, path: Path, **form: str) -> object:
    with path.open("rb") as handle:
        return client.post(
            "/api/checkpoints",
            files={"file": (path.name, handle, "application/octet-stream")},
            data={"dataset": "digits", **form},
        )


def test_good_onnx_upload_is_checked_and_its_surface_completes(
    client: TestClient, onnx_file: Path, no_code_loading: list[str]
) -> None:
    response = _upload(client, onnx_file)
    assert response.status_code == 201, response.text  # type: ignore[attr-defined]
    checkpoint = response.json()  # type: ignore[attr-defined]
    assert checkpoint["format"] == "onnx" and checkpoint["model"] == "onnx"
    assert checkpoint["metadata"]["onnx_check"]["passed"] is True
    assert [c["id"] for c in client.get("/api/checkpoints").json()] == [checkpoint["id"]]

    body = {"checkpoint": checkpoint["id"], "grid": {"nx": 3, "ny": 3}, "train_size": 60}
    created = client.post("/api/surfaces", json=body)
    assert created.status_code == 202, created.text
    run_all(client)
    job = client.get(f"/api/jobs/{created.json()['job']['id']}").json()
    assert job["status"] == "done", job["error"]
    assert no_code_loading == []

    state = client.app.state  # type: ignore[attr-defined]
    path = state.settings.surfaces_dir / f"{job['surface_id']}.h5"
    surface = store.read_surface(path)
    assert surface.status == "complete"
    assert surface.attrs["model_source"] == "onnx"
    assert surface.attrs["onnx"]["check"]["passed"] is True
    assert surface.attrs["onnx"]["sha256"] == checkpoint["id"]
    module, _ = load_onnx_model(onnx_file, sample_input_shape=SAMPLE)
    data = {"train": load_dataset("digits", "train", size=60)}
    flat = store.flat_coordinates(surface.x, surface.y, np.arange(surface.total))
    expected = reference_evaluate(copy.deepcopy(module), store.read_directions(path), flat, data)
    for metric, values in expected.items():
        np.testing.assert_allclose(surface.values[metric].reshape(-1), values, rtol=0, atol=1e-5)

    again = client.post("/api/surfaces", json=body)  # the same request: the cached surface
    assert again.status_code == 200, again.text
    assert again.json()["surface"]["id"] == job["surface_id"]
    assert again.json()["surface"]["model"] == "onnx"


def test_custom_operator_is_refused(
    client: TestClient, tmp_path: Path, no_code_loading: list[str]
) -> None:
    model = tiny_graph(
        helper.make_node("Backdoor", ["x"], ["y"], domain="com.example", name="evil"),
        opsets=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
    )
    response = _upload(client, save(model, tmp_path / "custom.onnx"))
    assert response.status_code == 422  # type: ignore[attr-defined]
    assert "custom operator com.example::Backdoor" in response.json()["detail"]  # type: ignore[attr-defined]
    assert client.get("/api/checkpoints").json() == [] and no_code_loading == []


def test_malformed_graphs_are_refused(
    client: TestClient, tmp_path: Path, onnx_file: Path, no_code_loading: list[str]
) -> None:
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(onnx_file.read_bytes()[: onnx_file.stat().st_size // 2])
    pretend = tmp_path / "script.onnx"
    pretend.write_text("import os; os.system('echo owned')")
    for path in (truncated, pretend):
        response = _upload(client, path)
        assert response.status_code == 422, path  # type: ignore[attr-defined]
        detail = response.json()["detail"]  # type: ignore[attr-defined]
        assert "does not parse" in detail or "invalid ONNX graph" in detail, detail
    assert client.get("/api/checkpoints").json() == [] and no_code_loading == []


def test_a_conversion_that_disagrees_with_onnxruntime_is_refused(
    client: TestClient, onnx_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = onnx2torch.convert

    def slightly_wrong(model: object) -> nn.Module:
        module = real(model)
        with torch.no_grad():
            next(module.parameters()).add_(1e-2)
        return module  # type: ignore[no-any-return]

    monkeypatch.setattr(onnx2torch, "convert", slightly_wrong)
    response = _upload(client, onnx_file)
    assert response.status_code == 422  # type: ignore[attr-defined]
    assert "disagrees with ONNX Runtime" in response.json()["detail"]  # type: ignore[attr-defined]


def test_wrong_shape_size_and_directions_are_client_errors(tmp_path: Path, onnx_file: Path) -> None:
    settings = tiny_settings(tmp_path / "data", max_onnx_bytes=1000)
    with TestClient(create_app(settings)) as small:
        assert _upload(small, onnx_file).status_code == 413  # type: ignore[attr-defined]
    with TestClient(create_app(tiny_settings(tmp_path / "data2"))) as client:
        response = _upload(client, onnx_file, dataset="cifar10")
        assert response.status_code == 422  # type: ignore[attr-defined]
        assert "data set's samples are [3, 32, 32]" in response.json()["detail"]  # type: ignore[attr-defined]
        four_way = export(nn.Sequential(nn.Flatten(), nn.Linear(64, 4)), tmp_path / "four.onnx")
        response = _upload(client, four_way)
        assert response.status_code == 422  # type: ignore[attr-defined]
        assert "needs logits of shape (batch, >= 10)" in response.json()["detail"]  # type: ignore[attr-defined]
        checkpoint = _upload(client, onnx_file).json()  # type: ignore[attr-defined]
        body = {"checkpoint": checkpoint["id"], "directions": {"kind": "pca"}}
        refused = client.post("/api/surfaces", json=body)
        assert refused.status_code == 422 and "use directions.kind 'random'" in refused.text


def test_cli_surface_of_an_onnx_file(tmp_path: Path, onnx_file: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "s.h5"
    args = ["surface", "--checkpoint", str(onnx_file), "--out", str(out), "--grid", "3"]
    args += ["--train-size", "40", "--device", "cpu", "--no-compile", "--quiet"]
    main = "import sys; from landscape.cli import main; sys.exit(main())"
    done = subprocess.run(
        [sys.executable, "-c", main, *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    surface = store.read_surface(out)
    assert surface.status == "complete" and surface.attrs["onnx"]["check"]["passed"] is True
