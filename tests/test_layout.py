"""The package's layout: no import cycle among its modules (at module level, inside
functions, or for type checking), and the low-level modules import nothing above them."""

from __future__ import annotations

import ast
from pathlib import Path

import genzoo

ROOT = Path(genzoo.__file__).parent


def module_names() -> dict[str, Path]:
    names = {}
    for path in ROOT.rglob("*.py"):
        parts = ("genzoo", *path.relative_to(ROOT).with_suffix("").parts)
        names[".".join(parts).removesuffix(".__init__")] = path
    return names


def imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The genzoo modules ``module`` imports anywhere in its file, with the packages that
    importing them runs first (``genzoo.models.base`` runs ``genzoo.models``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    found = set()
    for target in targets:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        parts = target.split(".")
        found |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)}
    return {m for m in found if m in modules and m != module and not module.startswith(m + ".")}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {m: imported(m, path, modules) for m, path in modules.items()}


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_low_level_modules_import_nothing_above_them() -> None:
    graph = import_graph()
    assert graph["genzoo.files"] <= {"genzoo.errors"}
    # The drawing kit serves the families' own figures: it must not import them.
    assert not any(m.startswith("genzoo.models") for m in graph["genzoo.plots"])
    assert "genzoo.runs" not in graph["genzoo.plots"]
