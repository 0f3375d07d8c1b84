"""The shape of lib/leuko: layer subpackages whose imports point down only, and no import cycle.

Imports are read from the source (AST) by :mod:`leuko.pipeline.stagedeps`, the reader that
decides each stage's code deps, counting every import, at module level or inside a function, so
a lazy import can hide neither a cycle nor a layer broken upwards."""

from __future__ import annotations

from pathlib import Path

from leuko.pipeline.stagedeps import imported_modules

PACKAGE = Path(__file__).resolve().parents[1] / "lib" / "leuko"

#: The layers of the package, bottom up: a module may import its own layer and lower ones.
#: Layers of one rank are peers that never import each other (the leukemia study and the cell
#: classifier; the thesis study and the pipeline's tools). CONTRIBUTING.md names what goes where.
LAYERS = {"core": 0, "models": 1, "thesis": 2, "pipeline": 2, "leukemia": 3, "cells": 3,
          "tool": 4, "reporting": 5}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """``leuko`` module -> the ``leuko`` modules it imports (packages it merely passes through,
    whose ``__init__`` runs first, left out)."""
    graph = {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path)
        found = imported_modules(path.read_text(), name if path.stem != "__init__"
                                 else f"{name}.__init__", root)
        graph[name] = {m for m in found if m != name and not (root.parent / m.replace(
            ".", "/") / "__init__.py").is_file()}
    return graph


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


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


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Each import that points to a higher layer or to a peer layer, as ``a -> b``."""
    found = []
    for module, imports in graph.items():
        own = layer(module)
        if own is None:  # leuko/__init__: the package root
            continue
        for other in imports:
            theirs = layer(other)
            if theirs != own and LAYERS[theirs] >= LAYERS[own]:
                found.append(f"{module} -> {other}")
    return sorted(found)


def test_every_module_sits_in_a_known_layer():
    graph = import_graph()
    assert len(graph) > 40 and "leuko.cells.detect" in graph
    assert {layer(m) for m in graph} - {None} == set(LAYERS)


def test_layers_point_down_only():
    assert upward_imports(import_graph()) == []


def test_no_import_cycle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle in lib/leuko: " + " -> ".join(cycle)


def test_detection_stands_apart_from_classify_and_the_study():
    graph = import_graph()
    assert not graph["leuko.cells.detect"] & {"leuko.tool.classify", "leuko.tool.smear"}
    assert "leuko.tool.smear" not in graph["leuko.tool.classify"]


def test_the_checkers_see_an_upward_import_and_a_cycle():
    graph = {"leuko.core.a": {"leuko.tool.b"}, "leuko.tool.b": set(),
             "leuko.cells.c": {"leuko.leukemia.d"}, "leuko.leukemia.d": {"leuko.core.a"}}
    assert upward_imports(graph) == ["leuko.cells.c -> leuko.leukemia.d",
                                     "leuko.core.a -> leuko.tool.b"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
