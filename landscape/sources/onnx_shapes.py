"""The static shape of every value of an ONNX graph for one input shape, found node by node
without running the graph, small constant subgraphs folded on the way.

Why node by node: the shapes must be the ones that follow from the input and the operators,
never the ones the file declares (an uploader's claims), and an exporter's shape arithmetic
must be seen through. PyTorch exports ``F.pad`` (the CIFAR ResNets' shortcut) as
``ConstantOfShape → Concat → Reshape → Slice → Transpose → Reshape → Cast`` feeding ``Pad``, and
its LSTM cells slice the gates at ``Shape → Gather → Add → Div → Mul``; ONNX's own data
propagation follows neither (no ``Reshape``, ``Transpose`` or ``Div``), so the padded and sliced
shapes would stay unknown. Here each node is inferred on its own (strict ONNX shape inference,
its inputs typed with the shapes found so far, small constants given by value), and a node
whose result is a small constant is replaced by that value: ``Shape``/``Size`` of a tensor
whose shape is known, and nodes of cheap operators (``FOLDABLE``) whose inputs are all
constants, evaluated with ONNX's reference (numpy) implementation once inference has shown
their outputs hold at most ``FOLD_MAX_ELEMENTS`` elements (at most ``FOLD_MAX_NODES`` of them).
ONNX Runtime folds the same nodes when it loads a graph.
"""

from __future__ import annotations

import math
from typing import Any

from landscape.errors import ModelFormatError

Shape = tuple[int, ...]
STANDARD_DOMAINS = frozenset({"", "ai.onnx"})  # the only operator sets uploads may use
FOLD_MAX_ELEMENTS = 2**16
FOLD_MAX_NODES = 2_000
FOLDABLE = frozenset(
    {
        "Abs", "Add", "And", "Cast", "Ceil", "Concat", "Constant", "ConstantOfShape", "Div",
        "Equal", "Expand", "Flatten", "Floor", "Gather", "Greater", "GreaterOrEqual",
        "Identity", "Less", "LessOrEqual", "Max", "Min", "Mod", "Mul", "Neg", "Not", "Or",
        "Range", "Reshape", "Slice", "Split", "Squeeze", "Sub", "Tile", "Transpose",
        "Unsqueeze", "Where",
    }
)  # fmt: skip


def static_shapes(model: Any, input_name: str, input_shape: Shape) -> dict[str, Shape | None]:
    """Every value's shape when ``input_name`` has ``input_shape`` (None: not a tensor, or a
    dimension that only running the graph would tell)."""
    return _Sweep(model, input_name, input_shape).run()


def describe(node: Any, index: int) -> str:
    """How messages name a node: its name (cut short) or its position, and its operator."""
    name = f"{node.name[:80]!r}" if node.name else f"#{index}"
    return f"node {name} ({node.op_type[:40]})"


def static_shape(value_type: Any) -> Shape | None:
    if value_type.WhichOneof("value") != "tensor_type":
        return None
    tensor = value_type.tensor_type
    if not tensor.HasField("shape"):
        return None
    dims = tensor.shape.dim
    if not all(d.HasField("dim_value") and d.dim_value >= 0 for d in dims):
        return None
    return tuple(int(d.dim_value) for d in dims)


def _size(tensor: Any) -> int:
    return math.prod(tensor.dims)


class _Sweep:
    """One pass over the nodes in their (topological) order: types and constants so far."""

    def __init__(self, model: Any, input_name: str, input_shape: Shape) -> None:
        from onnx import helper

        graph = model.graph
        self.opsets = list(model.opset_import)
        self.types: dict[str, Any] = {value.name: value.type for value in graph.input}
        for value in graph.input:
            if value.name == input_name:
                elem_type = value.type.tensor_type.elem_type
                self.types[value.name] = helper.make_tensor_type_proto(elem_type, input_shape)
        for tensor in graph.initializer:
            self.types[tensor.name] = helper.make_tensor_type_proto(tensor.data_type, tensor.dims)
        self.constants = {t.name: t for t in graph.initializer if _size(t) <= FOLD_MAX_ELEMENTS}
        self.nodes = list(graph.node)
        self.evaluated = 0

    def run(self) -> dict[str, Shape | None]:
        for index, node in enumerate(self.nodes):
            self.types.update(self._infer(node, describe(node, index)))
            for tensor in self._fold(node):
                self.constants[tensor.name] = tensor
        return {name: static_shape(value_type) for name, value_type in self.types.items()}

    def _tiny_model(self, node: Any, *, typed_inputs: bool) -> Any:
        """A model of ``node`` alone: constants as initializers, other inputs as typed inputs."""
        from onnx import helper

        names = list(dict.fromkeys(name for name in node.input if name))
        inits = [self.constants[name] for name in names if name in self.constants]
        inputs = [
            helper.make_value_info(name, self.types[name])
            for name in names
            if typed_inputs and name not in self.constants and name in self.types
        ]
        outputs = [helper.make_empty_tensor_value_info(name) for name in node.output if name]
        graph = helper.make_graph([node], "node", inputs, outputs, inits)
        return helper.make_model(graph, opset_imports=self.opsets)

    def _infer(self, node: Any, where: str) -> dict[str, Any]:
        import onnx

        try:
            inferred = onnx.shape_inference.infer_shapes(
                self._tiny_model(node, typed_inputs=True),
                check_type=True,
                strict_mode=True,
                data_prop=True,
            )
        except Exception as exc:  # untrusted graph: any inference failure is the file's fault
            line = (str(exc).strip().splitlines() or [""])[0]
            raise ModelFormatError(
                f"ONNX shape inference fails at {where} for the data set's input shape: "
                f"{type(exc).__name__}: {line}"[:500]
            ) from exc
        return {value.name: value.type for value in inferred.graph.output}

    def _fold(self, node: Any) -> list[Any]:
        """The node's outputs as constant tensors, or [] when it does not qualify."""
        if node.domain not in STANDARD_DOMAINS or not all(node.output):
            return []
        shapes = [static_shape(self.types[name]) for name in node.output]
        if any(s is None or math.prod(s) > FOLD_MAX_ELEMENTS for s in shapes):
            return []
        if node.op_type == "Constant" and [a.name for a in node.attribute] == ["value"]:
            value = type(node.attribute[0].t)()
            value.CopyFrom(node.attribute[0].t)
            value.name = node.output[0]
            return [value]
        if node.op_type in ("Shape", "Size") and len(node.input) == 1:
            return self._shape_value(node)
        if (
            node.op_type not in FOLDABLE
            or self.evaluated >= FOLD_MAX_NODES
            or not all(name in self.constants for name in node.input if name)
        ):
            return []
        self.evaluated += 1
        return _evaluate(self._tiny_model(node, typed_inputs=False), list(node.output))

    def _shape_value(self, node: Any) -> list[Any]:
        """``Shape`` or ``Size`` of a tensor whose shape is known: a constant, by definition."""
        from onnx import TensorProto, helper

        source = self.types.get(node.input[0])
        known = static_shape(source) if source is not None else None
        if known is None:
            return []
        if node.op_type == "Size":
            return [helper.make_tensor(node.output[0], TensorProto.INT64, [], [math.prod(known)])]
        dims = list(known[_attr_int(node, "start", 0) : _attr_int(node, "end", len(known))])
        return [helper.make_tensor(node.output[0], TensorProto.INT64, [len(dims)], dims)]


def _evaluate(tiny: Any, outputs: list[str]) -> list[Any]:
    """ONNX's reference implementation of a one-node model of constants; [] if it fails (the
    node then stays unfolded, and whatever depends on it is judged without its value)."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    try:
        results = ReferenceEvaluator(tiny).run(None, {})
        return [numpy_helper.from_array(r, n) for r, n in zip(results, outputs, strict=True)]
    except Exception:  # an operator the reference cannot fold is not the file's error
        return []


def _attr_int(node: Any, name: str, default: int) -> int:
    attr = next((a for a in node.attribute if a.name == name), None)
    return int(attr.i) if attr is not None else default
