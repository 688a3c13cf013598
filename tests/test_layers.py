"""The import layering covers every module, and no modules import each other in a cycle."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import grimp

import fedmtl

ROOT = Path(__file__).resolve().parent.parent


def _layered_modules() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    [layers] = [c for c in config["contracts"] if c["type"] == "layers"]
    return {name.strip() for layer in layers["layers"] for name in layer.split("|")}


def test_every_fedmtl_module_has_a_layer() -> None:
    modules = {f"fedmtl.{info.name}" for info in pkgutil.iter_modules(fedmtl.__path__)}
    layered = _layered_modules()
    assert len(modules) >= 25  # the walk found the package's modules, not nothing
    assert sorted(modules - layered) == []
    assert sorted(layered - modules - {"strategies"}) == []  # no stale names either


def _cycles(edges: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    graph = grimp.build_graph("fedmtl", "strategies", exclude_type_checking_imports=True)
    edges = {
        module: sorted(
            m for m in graph.find_modules_directly_imported_by(module) if m in graph.modules
        )
        for module in graph.modules
    }
    assert len(edges) > 80
    assert _cycles(edges) == []
