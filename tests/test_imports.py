"""The modules of lib/leuko form no import cycle: read from the source (AST), counting every
import, at module level or inside a function, so a lazy import cannot hide a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lib" / "leuko"


def imported_modules(source: str, package: str = "leuko") -> set[str]:
    """The package's modules that ``source`` imports anywhere (``import leuko.x``,
    ``from leuko import x``, ``from leuko.x import y``, relative imports included)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == package and len(parts) > 1:
                    found.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            parts = (node.module or "").split(".") if node.module else []
            if node.level:  # relative: inside the package itself
                parts = [package, *parts]
            if not parts or parts[0] != package:
                continue
            if len(parts) > 1:
                found.add(parts[1])
            else:  # from leuko import x, y
                found.update(alias.name for alias in node.names)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    modules = {path.stem for path in root.glob("*.py")}
    return {path.stem: (imported_modules(path.read_text()) & modules) - {path.stem}
            for path in sorted(root.glob("*.py"))}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert len(graph) > 10 and "detect" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in lib/leuko: " + " -> ".join(cycle)


def test_detection_stands_apart_from_classify_and_the_study():
    graph = import_graph()
    assert not graph["detect"] & {"classify", "smear"}
    assert "smear" not in graph["classify"]


def test_the_checker_sees_function_level_and_from_package_imports():
    source = ("import os\nfrom leuko import a, b\n"
              "def f():\n    from leuko.c import x\n    import leuko.d\n    from . import e\n")
    assert imported_modules(source) == {"a", "b", "c", "d", "e"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
