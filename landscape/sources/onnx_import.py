"""Uploaded architectures as ONNX: a declarative graph, loaded without running any of its
author's code, converted to a torch module and accepted only if it computes what ONNX Runtime
computes from the same file.

Why ONNX and nothing else for uploads: a TorchScript archive or a ``torch.export`` ``.pt2``
file carries pickled objects next to the graph, and their loaders may unpickle (run code);
a pickle is code. ONNX is a protobuf message: parsing it builds data, never calls Python.

What is refused, before conversion (``UnsafeModelError``): files over the size limit, tensors
stored outside the file (``external_data`` names a path the *server* would read), model-local
functions, operators outside the standard ``ai.onnx`` domain (custom ops need native code),
more nodes than the limit. Then ``onnx.checker.check_model(full_check=True)`` must pass and the
graph must have one input and one output (``ModelFormatError`` otherwise). Before anything is
converted or run, ``onnx_bounds`` reads the cost of the check's batch from the inferred shapes
and refuses a graph over the limits (elements per tensor and in all, estimated FLOPs, shapes
unknown until run time, control flow; ``UnsafeModelError``). Then ``onnx2torch`` must convert
it (``ModelFormatError`` otherwise). Finally ONNX Runtime (in a child process with a memory and
a time limit, ``onnx_sandbox``) and the module run a seeded random batch; their outputs must
agree within ``rtol``/``atol``. The numbers go into the check report, which the caller keeps
in the surface's provenance.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from landscape.errors import ModelFormatError, UnsafeModelError
from landscape.sources.onnx_bounds import graph_cost
from landscape.sources.onnx_limits import OnnxLimits
from landscape.sources.onnx_shapes import STANDARD_DOMAINS

_SAFE_NAME = re.compile(r"[^0-9A-Za-z_]")


def load_onnx_model(
    path: str | Path, *, sample_input_shape: tuple[int, ...], limits: OnnxLimits | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """The converted module (eval mode) and its check report; see the module docstring.

    ``sample_input_shape`` is one sample's shape, without the batch dimension (the data set's).
    """
    import onnx

    limits = limits or OnnxLimits()
    path = Path(path)
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise UnsafeModelError(
            f"ONNX file is {size / 2**20:.1f} MiB; the limit is {limits.max_bytes / 2**20:.0f} MiB"
        )
    raw = path.read_bytes()
    try:
        model = onnx.load_model_from_string(raw)  # protobuf parsing only: no external data
    except Exception as exc:
        raise ModelFormatError(
            f"not an ONNX model: the file does not parse ({type(exc).__name__})"
        ) from exc
    if not model.HasField("graph"):
        raise ModelFormatError("not an ONNX model: it has no graph")
    _refuse_unsafe(model, limits)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ModelFormatError(f"invalid ONNX graph: {_first_line(exc)}") from exc
    input_name, output_name = _single_io(model, sample_input_shape, limits)
    cost = graph_cost(model, input_name, (limits.check_batch, *sample_input_shape), limits)
    module = _convert(model)
    check = _check_against_onnxruntime(path, module, input_name, sample_input_shape, limits)
    report: dict[str, Any] = {
        "format": "onnx",
        "sha256": hashlib.sha256(raw).hexdigest(),
        "bytes": size,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "opsets": {o.domain or "ai.onnx": int(o.version) for o in model.opset_import},
        "nodes": sum(1 for _ in _nodes(model.graph)),
        "operators": dict(sorted(Counter(n.op_type for n in _nodes(model.graph)).items())),
        "input": input_name,
        "output": output_name,
        "parameters": sum(p.numel() for p in module.parameters()),
        "cost": {**cost, "batch": limits.check_batch},
        "check": check,
        "limits": asdict(limits),
    }
    return module, report


def onnx_file_cost(
    path: str | Path, *, sample_input_shape: tuple[int, ...], limits: OnnxLimits | None = None
) -> dict[str, int]:
    """What the upload check's ``graph_cost`` found for the file at its check batch (FLOPs,
    intermediate elements: divide by ``batch`` for one sample) and its initializers' elements
    as ``parameters``: how a job on an accepted upload is priced, from the graph and not from
    the file's size. Raises as ``load_onnx_model`` does for a graph it would refuse."""
    import onnx

    limits = limits or OnnxLimits()
    model = onnx.load_model_from_string(Path(path).read_bytes())
    input_name, _ = _single_io(model, sample_input_shape, limits)
    cost = graph_cost(model, input_name, (limits.check_batch, *sample_input_shape), limits)
    parameters = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    return {**cost, "batch": limits.check_batch, "parameters": parameters}


# --------------------------------------------------------------------------- refusals


def _nodes(graph: Any) -> Iterator[Any]:
    """Every node, including those of subgraphs (If/Loop/Scan bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _nodes(attr.g)
            for sub in attr.graphs:
                yield from _nodes(sub)


def _tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto: initializers and tensor-valued attributes, in subgraphs too."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield from (attr.sparse_tensor.values, attr.sparse_tensor.indices)
            for sparse in attr.sparse_tensors:
                yield from (sparse.values, sparse.indices)
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def _refuse_unsafe(model: Any, limits: OnnxLimits) -> None:
    import onnx

    if len(model.functions):
        names = ", ".join(f"{f.domain}::{f.name}" for f in model.functions)
        raise UnsafeModelError(f"ONNX model-local functions are not accepted ({names})")
    custom_opsets = sorted({o.domain for o in model.opset_import} - STANDARD_DOMAINS)
    for node in _nodes(model.graph):
        if node.domain not in STANDARD_DOMAINS:
            raise UnsafeModelError(
                f"custom operator {node.domain}::{node.op_type} (node {node.name!r}) is not "
                "accepted: only standard ONNX (ai.onnx) operators can be checked and converted"
            )
    if custom_opsets:
        raise UnsafeModelError(f"custom operator sets are not accepted: {', '.join(custom_opsets)}")
    for tensor in _tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            raise UnsafeModelError(
                f"tensor {tensor.name!r} refers to external data; an upload must hold all its "
                "weights in the one file (export without external data)"
            )
    n_nodes = sum(1 for _ in _nodes(model.graph))
    if n_nodes > limits.max_nodes:
        raise UnsafeModelError(f"ONNX graph has {n_nodes} nodes; the limit is {limits.max_nodes}")


def _single_io(model: Any, sample_shape: tuple[int, ...], limits: OnnxLimits) -> tuple[str, str]:
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise ModelFormatError(
            f"the ONNX graph must have one input and one output, it has {len(inputs)} and "
            f"{len(model.graph.output)}"
        )
    dims = inputs[0].type.tensor_type.shape.dim
    declared = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if declared and declared[0] is not None and declared[0] != limits.check_batch:
        raise ModelFormatError(
            f"the ONNX input {inputs[0].name!r} has a fixed batch size {declared[0]}; export it "
            "with a dynamic batch axis (torch.onnx.export(..., dynamic_axes={name: {0: 'batch'}}))"
        )
    wanted = list(sample_shape)
    if declared and (
        len(declared) != len(wanted) + 1
        or any(d is not None and d != w for d, w in zip(declared[1:], wanted, strict=False))
    ):
        shown = ["batch" if d is None else d for d in declared]
        raise ModelFormatError(
            f"the ONNX input {inputs[0].name!r} has shape {shown}; the data set's samples are "
            f"{wanted}"
        )
    return inputs[0].name, model.graph.output[0].name


# --------------------------------------------------------------------------- conversion, check


def _convert(model: Any) -> nn.Module:
    from onnx2torch import convert

    try:
        module = convert(model)
    except Exception as exc:
        raise ModelFormatError(f"cannot convert the ONNX graph: {_first_line(exc)}") from exc
    return _with_safe_names(module).eval()


def _with_safe_names(module: nn.Module) -> fx.GraphModule:
    """The same graph with module and attribute names made of ``[0-9A-Za-z_.]``: onnx2torch
    keeps ONNX node names (``/layer1/Conv``), and a ``/`` would nest the HDF5 datasets a
    surface stores its directions in."""
    if not isinstance(module, fx.GraphModule):
        raise ModelFormatError(f"onnx2torch returned a {type(module).__name__}, not a graph")
    graph = module.graph
    mapping: dict[str, Any] = {}
    renamed: dict[str, str] = {}
    for node in graph.nodes:
        if node.op not in ("call_module", "get_attr"):
            continue
        target = str(node.target)
        if target not in renamed:
            parts = [_SAFE_NAME.sub("_", p) or "_" for p in target.split(".")]
            parts = [f"m_{p}" if p[0].isdigit() else p for p in parts]
            new = ".".join(parts)
            while new in mapping:
                new += "_"
            renamed[target] = new
            mapping[new] = _resolve(module, target)
        node.target = renamed[target]
    safe = fx.GraphModule(mapping, graph, class_name="OnnxModel")
    return safe


def _resolve(module: nn.Module, target: str) -> Any:
    obj: Any = module
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _check_against_onnxruntime(
    path: Path,
    module: nn.Module,
    input_name: str,
    sample_shape: tuple[int, ...],
    limits: OnnxLimits,
) -> dict[str, Any]:
    """ONNX Runtime's output (``onnx_sandbox``: a child process within the limits) against the
    converted module's, on a seeded random batch."""
    from importlib.metadata import version

    from landscape.sources.onnx_sandbox import run_onnxruntime

    generator = torch.Generator().manual_seed(limits.check_seed)
    x = torch.randn((limits.check_batch, *sample_shape), generator=generator)
    expected = run_onnxruntime(
        path,
        x.numpy(),
        input_name,
        memory_bytes=limits.check_memory_bytes,
        timeout_s=limits.check_timeout_s,
        max_output_elements=limits.max_tensor_elements,
    )
    try:
        with torch.inference_mode():
            got = module(x)
    except Exception as exc:
        raise ModelFormatError(f"the converted module fails: {_first_line(exc)}") from exc
    expected = np.asarray(expected, dtype=np.float64)
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != expected.shape:
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        raise ModelFormatError(
            f"the converted module outputs {shape}, ONNX Runtime {expected.shape}"
        )
    diff = np.abs(got.double().numpy() - expected)
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    report = {
        "reference": f"onnxruntime {version('onnxruntime')}",
        "input_shape": [limits.check_batch, *sample_shape],
        "seed": limits.check_seed,
        "max_abs_error": float(diff.max()) if diff.size else 0.0,
        "max_rel_error": float(diff.max() / scale) if diff.size and scale > 0 else 0.0,
        "rtol": limits.rtol,
        "atol": limits.atol,
        "passed": bool(np.all(diff <= limits.atol + limits.rtol * np.abs(expected))),
    }
    if not report["passed"]:
        raise ModelFormatError(
            "the converted module disagrees with ONNX Runtime on a seeded random input "
            f"(max abs error {report['max_abs_error']:.3g}, max rel error "
            f"{report['max_rel_error']:.3g}; tolerance rtol {limits.rtol:g}, atol {limits.atol:g})"
        )
    return report


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line}"[:400]
