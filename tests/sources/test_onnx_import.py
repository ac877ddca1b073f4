"""ONNX uploads: an exported module loads, matches ONNX Runtime and gives the naive loop's
surface; custom ops, malformed graphs, external data, functions, oversize files and inexact
conversions are refused with clear errors, and loading never unpickles anything."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

onnx = pytest.importorskip("onnx")
onnx2torch = pytest.importorskip("onnx2torch")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

from api.errors import status_for  # noqa: E402
from landscape import storage as store  # noqa: E402
from landscape.data import load_dataset  # noqa: E402
from landscape.engine.evaluator import reference_evaluate  # noqa: E402
from landscape.errors import ModelFormatError, UnsafeModelError  # noqa: E402
from landscape.sources.onnx_import import load_onnx_model  # noqa: E402
from landscape.sources.onnx_limits import OnnxLimits  # noqa: E402
from landscape.specs import EngineOptions, GridSpec  # noqa: E402
from landscape.surface import compute_module_surface  # noqa: E402

SAMPLE = (1, 8, 8)  # one digits image


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 4 * 4, 10)

    def forward(self, x: Tensor) -> Tensor:
        h = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        return self.fc(h.flatten(1))


def export(model: nn.Module, path: Path, *, dynamic_batch: bool = True) -> Path:
    axes = {"x": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model.eval(), (torch.randn(2, *SAMPLE),), str(path), dynamo=False,
            input_names=["x"], output_names=["logits"], dynamic_axes=axes,
        )  # fmt: skip
    return path


@pytest.fixture
def trained() -> nn.Module:
    model = SmallCNN()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture
def good_file(tmp_path: Path, trained: nn.Module) -> Path:
    return export(trained, tmp_path / "net.onnx")


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def test_exported_module_loads_checked_and_its_surface_equals_the_naive_loop(
    tmp_path: Path, good_file: Path, trained: nn.Module
) -> None:
    module, report = load_onnx_model(good_file, sample_input_shape=SAMPLE)
    check = report["check"]
    assert check["passed"] and check["max_abs_error"] <= 1e-5
    assert check["reference"].startswith("onnxruntime ")
    assert report["operators"]["Conv"] == 1 and "ai.onnx" in report["opsets"]
    x = torch.randn(5, *SAMPLE)
    torch.testing.assert_close(module(x), trained(x), rtol=1e-5, atol=1e-5)
    data = {
        "train": load_dataset("digits", "train", size=40),
        "test": load_dataset("digits", "test", size=20),
    }
    grid = GridSpec(x_range=(-1, 1), n_x=4, y_range=(-1, 1), n_y=3)
    out = compute_module_surface(
        module, data, tmp_path / "s.h5", grid=grid, label="net.onnx",
        options=EngineOptions(device="cpu", workers=1, compile=False),
        extra_provenance={"onnx": report},
    )  # fmt: skip
    surface = store.read_surface(out)
    flat = store.flat_coordinates(surface.x, surface.y, np.arange(surface.total))
    expected = reference_evaluate(copy.deepcopy(module), store.read_directions(out), flat, data)
    for metric, values in expected.items():
        np.testing.assert_allclose(surface.values[metric].reshape(-1), values, rtol=0, atol=1e-5)
    assert surface.attrs["onnx"]["check"]["passed"] is True
    assert surface.attrs["model"] == "net.onnx"


def tiny_graph(
    *nodes: onnx.NodeProto,
    initializers: list[onnx.TensorProto] | None = None,
    opsets: list[onnx.OperatorSetIdProto] | None = None,
    **kw: object,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(nodes), "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=initializers or [],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=opsets or [helper.make_opsetid("", 17)], **kw)


def test_a_plain_hand_built_graph_is_accepted(tmp_path: Path) -> None:
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], np.eye(4).ravel().tolist())
    model = tiny_graph(helper.make_node("MatMul", ["x", "w"], ["y"]), initializers=[w])
    module, report = load_onnx_model(save(model, tmp_path / "ok.onnx"), sample_input_shape=(4,))
    assert report["check"]["passed"] and report["nodes"] == 1
    x = torch.randn(2, 4)
    torch.testing.assert_close(module(x), x)


def test_custom_operator_is_refused(tmp_path: Path) -> None:
    model = tiny_graph(
        helper.make_node("Backdoor", ["x"], ["y"], domain="com.example", name="evil"),
        opsets=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
    )
    with pytest.raises(UnsafeModelError, match=r"custom operator com\.example::Backdoor"):
        load_onnx_model(save(model, tmp_path / "custom.onnx"), sample_input_shape=(4,))


def test_external_data_is_refused_without_reading_it(tmp_path: Path) -> None:
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 4])
    w.data_location = TensorProto.EXTERNAL
    secret = tmp_path / "server-secret.bin"
    secret.write_bytes(np.ones(16, dtype=np.float32).tobytes())
    w.external_data.add(key="location", value=str(secret))
    model = tiny_graph(helper.make_node("MatMul", ["x", "w"], ["y"]), initializers=[w])
    with pytest.raises(UnsafeModelError, match="refers to external data"):
        load_onnx_model(save(model, tmp_path / "ext.onnx"), sample_input_shape=(4,))


def test_model_local_functions_are_refused(tmp_path: Path) -> None:
    fn = helper.make_function(
        "my.fns", "Twice", ["a"], ["b"], [helper.make_node("Add", ["a", "a"], ["b"])],
        [helper.make_opsetid("", 17)],
    )  # fmt: skip
    model = tiny_graph(
        helper.make_node("Twice", ["x"], ["y"], domain="my.fns"),
        opsets=[helper.make_opsetid("", 17), helper.make_opsetid("my.fns", 1)],
        functions=[fn],
    )
    with pytest.raises(UnsafeModelError, match="model-local functions"):
        load_onnx_model(save(model, tmp_path / "fn.onnx"), sample_input_shape=(4,))


def test_malformed_files_are_refused(tmp_path: Path, good_file: Path) -> None:
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(good_file.read_bytes()[: good_file.stat().st_size // 2])
    with pytest.raises(ModelFormatError, match=r"does not parse|invalid ONNX graph"):
        load_onnx_model(truncated, sample_input_shape=SAMPLE)
    dangling = tiny_graph(helper.make_node("Add", ["x", "nowhere"], ["y"]))
    with pytest.raises(ModelFormatError, match="invalid ONNX graph"):
        load_onnx_model(save(dangling, tmp_path / "dangling.onnx"), sample_input_shape=(4,))
    (tmp_path / "text.onnx").write_text("import os; os.system('rm -rf /')")
    with pytest.raises(ModelFormatError):
        load_onnx_model(tmp_path / "text.onnx", sample_input_shape=(4,))


def test_size_fixed_batch_and_input_shape_are_checked(
    tmp_path: Path, good_file: Path, trained: nn.Module
) -> None:
    with pytest.raises(UnsafeModelError, match="the limit is"):
        load_onnx_model(good_file, sample_input_shape=SAMPLE, limits=OnnxLimits(max_bytes=1024))
    fixed = export(trained, tmp_path / "fixed.onnx", dynamic_batch=False)
    with pytest.raises(ModelFormatError, match="fixed batch size 2"):
        load_onnx_model(fixed, sample_input_shape=SAMPLE)
    with pytest.raises(ModelFormatError, match=r"data set's samples are \[3, 32, 32\]"):
        load_onnx_model(good_file, sample_input_shape=(3, 32, 32))


def test_a_conversion_that_disagrees_with_onnxruntime_is_refused(
    good_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = onnx2torch.convert

    def slightly_wrong(model: onnx.ModelProto) -> nn.Module:
        module = real(model)
        with torch.no_grad():
            next(module.parameters()).add_(1e-2)
        return module

    monkeypatch.setattr(onnx2torch, "convert", slightly_wrong)
    with pytest.raises(ModelFormatError, match="disagrees with ONNX Runtime") as info:
        load_onnx_model(good_file, sample_input_shape=SAMPLE)
    assert "max abs error" in str(info.value)


def test_loading_never_unpickles(good_file: Path, no_code_loading: list[str]) -> None:
    _, report = load_onnx_model(good_file, sample_input_shape=SAMPLE)
    assert report["check"]["passed"]
    assert no_code_loading == []


def test_refusals_are_client_errors() -> None:
    assert status_for(ModelFormatError("x")) == 422
    assert status_for(UnsafeModelError("x")) == 422


# --------------------------------------------------------------------------- cost bounds


def _filled(name: str, shape: list[int]) -> list[onnx.NodeProto]:
    """``name``: a float tensor of ones of ``shape``, from a few bytes of graph."""
    dims = helper.make_tensor(f"{name}_dims", TensorProto.INT64, [len(shape)], shape)
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    return [
        helper.make_node("Constant", [], [f"{name}_shape"], value=dims),
        helper.make_node(
            "ConstantOfShape", [f"{name}_shape"], [name], name=f"fill_{name}", value=one
        ),
    ]


def _added_to_x(name: str) -> list[onnx.NodeProto]:
    """``y = x + sum(name)``: the heavy tensor feeds the output, as in the finding."""
    return [
        helper.make_node("ReduceSum", [name], ["total"], keepdims=0, name="sum"),
        helper.make_node("Add", ["x", "total"], ["y"], name="add"),
    ]


def _chain(op: str, n: int, size: int) -> list[onnx.NodeProto]:
    """``n`` products of ``size`` × ``size`` matrices of ones, the last one ``m{n}``."""
    nodes = _filled("m0", [size, size])
    for i in range(n):
        extra = {"equation": "ij,jk->ik"} if op == "Einsum" else {}
        nodes.append(
            helper.make_node(op, [f"m{i}", f"m{i}"], [f"m{i + 1}"], name=f"{op}{i}", **extra)
        )
    return nodes


@pytest.fixture
def nothing_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Conversion and ONNX Runtime fail the test if reached: the bounds refuse first."""
    from landscape.sources import onnx_sandbox

    def never(*_: object, **__: object) -> None:
        raise AssertionError("the graph was run or converted before its bounds were checked")

    monkeypatch.setattr(onnx2torch, "convert", never)
    monkeypatch.setattr(onnx_sandbox, "run_onnxruntime", never)


def test_a_memory_bomb_is_refused_before_anything_runs(tmp_path: Path, nothing_runs: None) -> None:
    bomb = save(
        tiny_graph(*_filled("big", [16384, 16384]), *_added_to_x("big")), tmp_path / "b.onnx"
    )
    assert bomb.stat().st_size < 3000  # a gigabyte of float32 asked for by a few hundred bytes
    with pytest.raises(UnsafeModelError) as info:
        load_onnx_model(bomb, sample_input_shape=(4,))
    message = str(info.value)
    assert "node 'fill_big' (ConstantOfShape)" in message and "268435456 elements" in message
    assert f"the limit is {OnnxLimits().max_tensor_elements} elements per tensor" in message


@pytest.mark.parametrize(
    ("op", "n", "size", "node"),
    [("MatMul", 8, 2048, "MatMul1"), ("Einsum", 4, 2048, "Einsum1"), ("Gemm", 3, 4096, "Gemm0")],
)
def test_heavy_arithmetic_is_refused_before_anything_runs(
    tmp_path: Path, nothing_runs: None, op: str, n: int, size: int, node: str
) -> None:
    path = save(tiny_graph(*_chain(op, n, size), *_added_to_x(f"m{n}")), tmp_path / "heavy.onnx")
    with pytest.raises(
        UnsafeModelError,
        match=rf"node '{node}' \({op}\) brings the graph's estimated work to .* operations",
    ):
        load_onnx_model(path, sample_input_shape=(4,))


def test_a_heavy_convolution_and_a_large_sum_of_tensors_are_refused(
    tmp_path: Path, nothing_runs: None
) -> None:
    conv = [
        *_filled("img", [1, 256, 256, 256]), *_filled("w", [256, 256, 3, 3]),
        helper.make_node("Conv", ["img", "w"], ["out"], pads=[1, 1, 1, 1], name="conv"),
        *_added_to_x("out"),
    ]  # fmt: skip
    with pytest.raises(UnsafeModelError, match=r"node 'conv' \(Conv\) brings .* operations"):
        load_onnx_model(save(tiny_graph(*conv), tmp_path / "c.onnx"), sample_input_shape=(4,))
    many = [*_filled("a", [4096, 4096])]  # 16.8 M elements each: under the per-tensor bound
    for i in range(20):
        many.append(
            helper.make_node("Relu", ["a" if i == 0 else f"r{i - 1}"], [f"r{i}"], name=f"relu{i}")
        )
    path = save(tiny_graph(*many, *_added_to_x("r19")), tmp_path / "many.onnx")
    with pytest.raises(
        UnsafeModelError, match=r"node 'relu14' \(Relu\) brings the graph's intermediate tensors to"
    ):
        load_onnx_model(path, sample_input_shape=(4,))


def test_shapes_known_only_at_run_time_and_control_flow_are_refused(
    tmp_path: Path, nothing_runs: None
) -> None:
    data_shaped = [
        helper.make_node("NonZero", ["x"], ["where"], name="nonzero"),
        helper.make_node("Cast", ["where"], ["wheref"], to=TensorProto.FLOAT),
        *_added_to_x("wheref"),
    ]
    path = save(tiny_graph(*data_shaped), tmp_path / "nz.onnx")
    with pytest.raises(
        UnsafeModelError,
        match=r"node 'nonzero' \(NonZero\): the shape of its output 'where' cannot be inferred",
    ):
        load_onnx_model(path, sample_input_shape=(4,))
    branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["out"])], "branch", [],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4])],
    )  # fmt: skip
    cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
    nodes = [
        helper.make_node("Constant", [], ["c"], value=cond),
        helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch, name="if"),
    ]
    with pytest.raises(UnsafeModelError, match=r"node 'if' \(If\) holds a subgraph: control flow"):
        load_onnx_model(save(tiny_graph(*nodes), tmp_path / "if.onnx"), sample_input_shape=(4,))


class PaddedChunks(nn.Module):
    """What exporters compute from constants: ``F.pad`` (the CIFAR ResNet shortcut) and
    ``chunk`` (LSTM gates) both export shape arithmetic ONNX's data propagation cannot follow."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: Tensor) -> Tensor:
        h = F.pad(self.conv(x)[:, :, ::2, ::2], (0, 0, 0, 0, 2, 2))
        a, b = self.fc(h.flatten(1)).chunk(2, dim=1)
        return torch.cat([a.relu(), b], dim=1)


def test_exported_shape_arithmetic_is_seen_through_and_the_cost_reported(tmp_path: Path) -> None:
    path = tmp_path / "padded.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            PaddedChunks().eval(), (torch.randn(2, *SAMPLE),), str(path), dynamo=False,
            opset_version=17, input_names=["x"], output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        )  # fmt: skip
    _, report = load_onnx_model(path, sample_input_shape=SAMPLE)
    assert report["check"]["passed"] and {"Pad", "Slice", "Reshape"} <= set(report["operators"])
    cost = report["cost"]
    assert cost["batch"] == 3 and 0 < cost["max_tensor_elements"] <= cost["total_elements"]
    assert cost["flops"] >= 2 * 3 * 4 * 8 * 8 * 9  # the convolution alone


def test_onnxruntime_runs_in_a_child_within_memory_and_time_limits(tmp_path: Path) -> None:
    """Bounds loosened, so only the child's own limits stand between the graph and the host."""
    loose = {"max_tensor_elements": 2**31, "max_total_elements": 2**32, "max_flops": 2**50}
    bomb = save(
        tiny_graph(*_filled("big", [16384, 16384]), *_added_to_x("big")), tmp_path / "b.onnx"
    )
    limits = OnnxLimits(check_memory_bytes=400 * 2**20, **loose)
    with pytest.raises(UnsafeModelError, match=r"out of the check's memory limit \(400 MiB"):
        load_onnx_model(bomb, sample_input_shape=(4,), limits=limits)
    slow = tiny_graph(*_chain("MatMul", 16, 2048), *_added_to_x("m16"))
    slow_path = save(slow, tmp_path / "slow.onnx")
    limits = OnnxLimits(check_timeout_s=1.0, **loose)
    with pytest.raises(UnsafeModelError, match=r"did not finish the check within 1 s"):
        load_onnx_model(slow_path, sample_input_shape=(4,), limits=limits)
