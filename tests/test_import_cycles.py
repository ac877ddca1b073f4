"""No import cycles among the modules of ``landscape/``, ``api/`` and ``bench/``.

A cycle works only while every module in it is imported in one order; the next refactor that
imports another member first meets a half-initialized module. The graph is built from the
source with ``ast``: an edge for every module-level import (``if``/``try`` blocks included,
``TYPE_CHECKING`` ones too: a type checker follows them), and ``from x import y`` counts as an
edge to ``x.y`` when ``y`` is a submodule of ``x`` (else to ``x``, which defines ``y``).
A second check counts imports inside functions too: moving an import into a function hides
a cycle from the first, it does not untangle the two modules.
Importing ``a.b.c`` runs ``a/__init__.py`` as well; that is not counted, or every package that
re-exports its modules would be a cycle with them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("landscape", "api", "bench")


def _modules() -> dict[str, Path]:
    """Dotted module name → source file, for every module of the packages."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _module_level(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements run when the module is imported: not inside a def or a class."""
    for statement in body:
        if isinstance(statement, ast.Import | ast.ImportFrom):
            yield statement
        elif isinstance(statement, ast.If):
            yield from _module_level(statement.body)
            yield from _module_level(statement.orelse)
        elif isinstance(statement, ast.Try):
            for block in (statement.body, statement.orelse, statement.finalbody):
                yield from _module_level(block)
            for handler in statement.handlers:
                yield from _module_level(handler.body)
        elif isinstance(statement, ast.With):
            yield from _module_level(statement.body)


def _anywhere(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, in functions too."""
    for node in ast.walk(ast.Module(body=body, type_ignores=[])):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def _imported(name: str, path: Path, modules: dict[str, Path], deferred: bool) -> set[str]:
    """The project modules ``name`` (its source at ``path``) imports at module level, and
    inside functions as well when ``deferred``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    statements = _anywhere if deferred else _module_level
    for statement in statements(ast.parse(path.read_text(), str(path)).body):
        if isinstance(statement, ast.Import):
            targets.update(alias.name for alias in statement.names)
            continue
        base = statement.module or ""
        if statement.level:
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - (statement.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in statement.names:
            submodule = f"{base}.{alias.name}"
            targets.add(submodule if submodule in modules else base)
    return {t for t in targets if t in modules and t != name}


def import_graph(*, deferred: bool = False) -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imported(name, path, modules, deferred) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each as a
    closed path through it, so a failure names the imports to untangle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(_path_through(sorted(component), graph))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _path_through(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle from the component's first module back to itself."""
    start, members = component[0], set(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & members):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if target not in previous:
                    previous[target] = node
                    following.append(target)
        frontier = following
    return component


def test_the_graph_sees_imports_of_every_form() -> None:
    """The scan finds plain, ``from``, relative, submodule and ``TYPE_CHECKING`` imports, and
    finds a cycle where one is (else the test below could pass by seeing nothing)."""
    graph = import_graph()
    assert "landscape.engine.fx_trace" in graph["landscape.engine.evaluator"]
    assert "api.planning.cost" in graph["api.planning.job_cost"]
    assert "landscape.sources.onnx_shapes" in graph["landscape.sources.onnx_bounds"]
    assert "landscape.models.plugins" not in graph["landscape.models.registry"]
    assert "landscape.models.plugins" in import_graph(deferred=True)["landscape.models.registry"]
    assert {"a", "b"} <= {m for c in cycles({"a": {"b"}, "b": {"c", "a"}, "c": set()}) for m in c}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert found == [], "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_no_import_cycles_through_imports_inside_functions_either() -> None:
    found = cycles(import_graph(deferred=True))
    assert found == [], "import cycles: " + "; ".join(" -> ".join(c) for c in found)
