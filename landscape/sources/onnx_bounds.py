"""What an ONNX graph will cost, read from its inferred shapes before any node runs.

Why: a graph of a few kilobytes can ask for gigabytes (``ConstantOfShape([16384, 16384])``
feeding a ``ReduceSum``) or for minutes of arithmetic (chained 2048 × 2048 ``MatMul``\\ s), and
the upload check, ONNX Runtime's run and every grid point of a surface would pay it again.
ONNX shape inference (strict, node by node from the input fixed to the check's batch, small
constant subgraphs folded on the way: ``onnx_shapes``) gives the shape of every intermediate
without executing the graph. From those shapes this module bounds the elements of each
tensor, the elements of all of them together and the floating-point operations of the
operators whose work grows faster than their tensors (``MatMul``, ``Gemm``, ``Conv``,
``ConvTranspose``, ``Einsum``, pooling windows, ``LRN``; every other operator is counted as
linear in its inputs and outputs). A graph over a bound,
one whose shapes cannot be known before it runs, or one with control flow (an ``If``, ``Loop``
or ``Scan`` body may run any number of times) is refused with ``UnsafeModelError`` naming the
node and the bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from landscape.errors import UnsafeModelError
from landscape.sources.onnx_limits import OnnxLimits
from landscape.sources.onnx_shapes import Shape, describe, static_shapes

# Their cost depends on the values of their inputs (box counts, region sizes), not on shapes.
VALUE_DEPENDENT_COST = frozenset({"NonMaxSuppression", "RoiAlign"})
_POOLS = frozenset({"AveragePool", "MaxPool", "LpPool"})


def graph_cost(
    model: Any, input_name: str, input_shape: Sequence[int], limits: OnnxLimits
) -> dict[str, int]:
    """The cost of running ``model`` on an input of ``input_shape`` (batch included): the
    largest tensor's elements, all intermediates' elements and the FLOP estimate; raises
    ``UnsafeModelError`` at the first node that passes a bound of ``limits``."""
    _refuse_control_flow(model.graph)
    shapes = static_shapes(model, input_name, tuple(input_shape))
    largest = total = flops = 0
    for index, node in enumerate(model.graph.node):
        where = describe(node, index)
        if node.op_type in VALUE_DEPENDENT_COST:
            raise UnsafeModelError(
                f"{where}: the cost of {node.op_type} depends on its input values, so it "
                "cannot be bounded before it runs"
            )
        out_elements = 0
        for name in node.output:
            if not name:
                continue  # an optional output left out
            elements = _elements(shapes, name, where)
            if elements > limits.max_tensor_elements:
                raise UnsafeModelError(
                    f"{where} outputs a tensor of {elements} elements; the limit is "
                    f"{limits.max_tensor_elements} elements per tensor (at a batch of "
                    f"{input_shape[0]})"
                )
            out_elements += elements
            largest = max(largest, elements)
        total += out_elements
        if total > limits.max_total_elements:
            raise UnsafeModelError(
                f"{where} brings the graph's intermediate tensors to {total} elements; the "
                f"limit is {limits.max_total_elements} in all (at a batch of {input_shape[0]})"
            )
        flops += _flops(node, [shapes.get(name) for name in node.input], out_elements)
        if flops > limits.max_flops:
            raise UnsafeModelError(
                f"{where} brings the graph's estimated work to {flops:.3g} floating-point "
                f"operations per forward pass; the limit is {limits.max_flops:.3g} (at a "
                f"batch of {input_shape[0]})"
            )
    return {"max_tensor_elements": largest, "total_elements": total, "flops": flops}


def _refuse_control_flow(graph: Any) -> None:
    for index, node in enumerate(graph.node):
        if any(attr.HasField("g") or len(attr.graphs) for attr in node.attribute):
            raise UnsafeModelError(
                f"{describe(node, index)} holds a subgraph: control flow (If, Loop, Scan) is "
                "not accepted, its cost cannot be bounded before it runs"
            )


def _elements(shapes: dict[str, Shape | None], name: str, where: str) -> int:
    shape = shapes.get(name)
    if shape is None:
        raise UnsafeModelError(
            f"{where}: the shape of its output {name[:80]!r} cannot be inferred before the "
            "graph runs (a shape computed from data, or not a tensor); only graphs whose "
            "shapes follow from the input's are accepted"
        )
    return math.prod(shape)


# --------------------------------------------------------------------------- work estimate


def _flops(node: Any, inputs: list[Shape | None], out_elements: int) -> int:
    """Floating-point operations of one node: multiply-adds count two. Inputs of an operator
    with a formula are outputs already checked, initializers or the graph input, so known."""
    op = node.op_type
    if op == "MatMul" and inputs[0]:
        return 2 * out_elements * inputs[0][-1]
    if op == "Gemm" and inputs[0] and len(inputs[0]) == 2:
        inner = inputs[0][0] if _int_attr(node, "transA", 0) else inputs[0][1]
        return 2 * out_elements * inner
    if op == "Conv" and inputs[1]:
        return 2 * out_elements * math.prod(inputs[1][1:])
    if op == "ConvTranspose" and inputs[0] and inputs[1]:
        return 2 * math.prod(inputs[0]) * math.prod(inputs[1][1:])
    if op in _POOLS:
        return out_elements * math.prod(_ints_attr(node, "kernel_shape"))
    if op == "LRN":
        return out_elements * _int_attr(node, "size", 1)
    if op == "Einsum":
        return _einsum_flops(node, inputs, out_elements)
    return sum(math.prod(shape) for shape in inputs if shape is not None) + out_elements


def _einsum_flops(node: Any, inputs: list[Shape | None], out_elements: int) -> int:
    """Each output element sums, over every combination of the contracted indices, a product
    of all operands: what a naive evaluation does, an upper bound of any contraction order."""
    equation = _str_attr(node, "equation").replace(" ", "")
    lhs, _, rhs = equation.partition("->")
    terms = lhs.split(",")
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, inputs, strict=False):
        head, ellipsis, tail = term.partition("...")
        if shape is None or len(shape) < len(head) + len(tail):
            raise UnsafeModelError(f"Einsum {equation[:80]!r} does not fit its input shapes")
        named = shape[: len(head)] + shape[len(shape) - len(tail) :]
        # the dimensions "..." stands for, as one index (summed when the output omits it)
        spans = {"...": math.prod(shape[len(head) : len(shape) - len(tail)])} if ellipsis else {}
        for letter, size in (*zip(head + tail, named, strict=True), *spans.items()):
            sizes[letter] = max(sizes.get(letter, 1), size)
    if "->" in equation:
        kept = set(rhs) | ({"..."} if "..." in rhs else set())
    else:  # implicit output: the indices seen once, and "..."
        kept = {c for c in lhs if lhs.count(c) == 1} | {"..."}
    contracted = math.prod(size for index, size in sizes.items() if index not in kept)
    return len(terms) * out_elements * contracted


def _attr(node: Any, name: str) -> Any:
    return next((attr for attr in node.attribute if attr.name == name), None)


def _int_attr(node: Any, name: str, default: int) -> int:
    attr = _attr(node, name)
    return int(attr.i) if attr is not None else default


def _ints_attr(node: Any, name: str) -> list[int]:
    attr = _attr(node, name)
    return [int(i) for i in attr.ints] if attr is not None else []


def _str_attr(node: Any, name: str) -> str:
    attr = _attr(node, name)
    return attr.s.decode("utf-8", "replace") if attr is not None else ""
