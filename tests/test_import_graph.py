"""The import graph of ``server_framework``, ``handlers`` and ``protocols``: no circle, no reach
into another package's private modules.

The graph is read from the source (every ``import`` statement, at module level, under
``if TYPE_CHECKING:`` and inside functions alike), so a circle that only shows at type-checking
time, or only once a lazy import runs, fails here too. An edge goes to the module an import
names: ``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to ``a.b``.
A module's implicit import of its parent package is not an edge (Python runs the parent's
``__init__`` first, whatever the child imports).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("server_framework", "handlers", "protocols")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


MODULES = modules()


def imported_names(name: str, path: Path) -> Iterator[str]:
    """Every module name ``name`` imports, wherever the import statement stands."""
    is_package = path.name == "__init__.py"
    package_parts = name.split(".") if is_package else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package_parts[: len(package_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield candidate if candidate in MODULES else base


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        edges[name] = {
            target for target in imported_names(name, path) if target in MODULES and target != name
        }
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
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
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read() -> None:
    edges = graph()
    assert "server_framework.servers._stream" in edges
    assert "server_framework._loops" in edges["server_framework.servers._stream"]
    # imports inside functions count: the registry's lazy picks are edges
    assert "server_framework.servers._trio" in edges["server_framework._loops"]
    # so do imports under TYPE_CHECKING
    assert "server_framework.servers._base" in edges["server_framework._loops"]


def test_no_import_circle() -> None:
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def private_owner(target: str) -> str | None:
    """The package whose private module ``target`` is (``a.b`` for ``a.b._c.d``), or None."""
    parts = target.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    return None


#: The one module whose job is to reach into other packages' private modules: the registry
#: that picks the per-loop implementation of servers and clients.
REGISTRY = "server_framework._loops"


@pytest.mark.parametrize("name", sorted(set(MODULES) - {REGISTRY}))
def test_private_modules_are_imported_only_from_inside_their_package(name: str) -> None:
    """``a.b._c`` may be imported by ``a.b`` and what lies below it, never from elsewhere."""
    wrong = []
    for target in imported_names(name, MODULES[name]):
        owner = private_owner(target)
        if owner is None or target not in MODULES:
            continue
        if not (name == owner or name.startswith(owner + ".")):
            wrong.append(target)
    assert wrong == []
