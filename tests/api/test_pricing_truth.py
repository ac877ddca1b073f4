"""An ONNX upload is priced by what its graph computes, not by its file's size: a few
kilobytes of graph can ask for millions of FLOPs per sample (weights made by
``ConstantOfShape`` at run time), and a job on it must be estimated, queued and refused as
the work it is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnx2torch")
pytest.importorskip("onnxruntime")

from fastapi.testclient import TestClient  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from api.app import create_app  # noqa: E402
from landscape.sources.onnx_import import load_onnx_model  # noqa: E402
from tests.api.test_api import tiny_settings  # noqa: E402
from tests.sources.test_onnx_import import SAMPLE, save  # noqa: E402

WIDTH = 256  # 256 × 256 = 65 536 elements: the most a folded constant may hold
PRODUCTS = 100
SAMPLES = 60


def _filled(name: str, shape: list[int], value: float) -> list[onnx.NodeProto]:
    dims = helper.make_tensor(f"{name}_dims", TensorProto.INT64, [len(shape)], shape)
    fill = helper.make_tensor(f"{name}_value", TensorProto.FLOAT, [1], [value])
    return [
        helper.make_node("Constant", [], [f"{name}_shape"], value=dims),
        helper.make_node("ConstantOfShape", [f"{name}_shape"], [name], value=fill),
    ]


def matmul_chain(path: Path) -> Path:
    """digits image → 64 → ``PRODUCTS`` products by a ``WIDTH`` × ``WIDTH`` matrix → 10
    logits, every matrix built in the graph: a file of a few kilobytes."""
    nodes = [
        helper.make_node("Flatten", ["x"], ["h0"]),
        *_filled("w_in", [64, WIDTH], 1 / 64),
        *_filled("w", [WIDTH, WIDTH], 1 / WIDTH),
        *_filled("w_out", [WIDTH, 10], 1 / WIDTH),
        helper.make_node("MatMul", ["h0", "w_in"], ["a0"]),
    ]
    for i in range(PRODUCTS):
        nodes.append(helper.make_node("MatMul", [f"a{i}", "w"], [f"a{i + 1}"]))
    nodes.append(helper.make_node("MatMul", [f"a{PRODUCTS}", "w_out"], ["y"]))
    graph = helper.make_graph(
        nodes, "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *SAMPLE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return save(model, path)


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    return matmul_chain(tmp_path / "chain.onnx")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = tiny_settings(tmp_path / "data", max_grid_points=201 * 201)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _measured_flops_per_sample(path: Path) -> int:
    """FLOPs of the converted module's forward pass, counted by torch as it runs."""
    module, _ = load_onnx_model(path, sample_input_shape=SAMPLE)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(torch.zeros((1, *SAMPLE)))
    return int(counter.get_total_flops())


def _uploaded(client: TestClient, path: Path) -> str:
    with path.open("rb") as handle:
        reply = client.post(
            "/api/checkpoints",
            files={"file": (path.name, handle, "application/octet-stream")},
            data={"dataset": "digits"},
        )
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


def _surface(checkpoint: str, n: int) -> dict[str, object]:
    return {"checkpoint": checkpoint, "grid": {"nx": n, "ny": n}, "train_size": SAMPLES}


def test_an_onnx_surface_is_priced_by_its_graphs_flops(client: TestClient, chain: Path) -> None:
    per_sample = _measured_flops_per_sample(chain)
    assert per_sample > 1000 * chain.stat().st_size  # the case: far more work than bytes
    checkpoint = _uploaded(client, chain)
    reply = client.post("/api/jobs/estimate", json={"surfaces": [_surface(checkpoint, 3)]})
    assert reply.status_code == 200, reply.text
    estimated = reply.json()["jobs"][0]["estimate"]["flops"]
    true = per_sample * SAMPLES * 9
    assert true / 2 <= estimated <= 2 * true, (estimated, true)


def test_a_large_grid_of_it_is_refused_by_the_flops_budget(client: TestClient, chain: Path) -> None:
    checkpoint = _uploaded(client, chain)
    # all 1437 images at 40 401 points: over the default 5e14 FLOPs
    whole_set = {**_surface(checkpoint, 201), "train_size": None}
    reply = client.post("/api/surfaces", json=whole_set)
    assert reply.status_code == 422, reply.text
    assert "LANDSCAPE_MAX_JOB_FLOPS" in reply.text
    assert client.post("/api/surfaces", json=_surface(checkpoint, 3)).status_code == 202
