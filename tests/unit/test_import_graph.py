"""The import graph of the whole tree (read with ast, imports inside functions included).

* No import cycles between our modules, hidden in function bodies or not.
* A service package (registry/, ingest/, notifications/) imports its own modules,
  platereg/ and schemas/ only, never another service's internals.
* The shared layers (platereg/, schemas/) import no service package.
* Only the composition root (wiring/) imports more than one service: where one
  service's work runs inside another's, the host defines a hook and wiring/ plugs
  the other's function in. Nothing imports wiring/ (``platereg.cli`` loads
  ``wiring.cli`` by name, as it loads the services' command modules).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("platereg", "schemas", "registry", "ingest", "notifications", "wiring", "bench")
SERVICES = ("registry", "ingest", "notifications")
SHARED = ("platereg", "schemas")
COMPOSITION_ROOT = "wiring"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))
            if ".venv" not in p.parts}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Our modules that ``name`` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # ``from pkg import mod`` imports the module pkg.mod; else the module itself
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        for target in targets:
            while target and target not in known:   # ``import a.b.c`` names a.b.c or a parent
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def test_the_graph_is_read() -> None:
    graph = _graph()
    # Imports at module level and inside function bodies are both seen.
    assert "registry.consumer.apply" in graph["registry.consumer.loop"]
    # imported inside a command
    assert "registry.consumer.service" in graph["registry.consumer.cli"]


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_cycle_detection_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _crossings(graph: dict[str, set[str]], package: str, allowed: set[str]) -> list[str]:
    return sorted(f"{m} -> {t}" for m, targets in graph.items() if _top(m) == package
                  for t in targets if _top(t) not in allowed)


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_only_itself_platereg_and_schemas(service: str) -> None:
    assert _crossings(_graph(), service, {service, *SHARED}) == [], \
        "a service imports another service's internals (or the composition root)"


@pytest.mark.parametrize("layer", SHARED)
def test_shared_layers_import_no_service(layer: str) -> None:
    assert _crossings(_graph(), layer, set(SHARED)) == []


def test_only_the_composition_root_imports_it() -> None:
    importers = sorted(m for m, targets in _graph().items() if _top(m) != COMPOSITION_ROOT
                       and any(_top(t) == COMPOSITION_ROOT for t in targets))
    assert importers == []


def test_the_composition_root_joins_the_services() -> None:
    # The registry consumer's batch hook is the notices' function, plugged in here.
    assert {"notifications.events", "registry.consumer.cli"} <= _graph()["wiring.cli"]


def test_a_crossing_is_found() -> None:
    graph = {"notifications.events": {"registry.consumer.batch", "schemas.fold"},
             "schemas.fold": {"schemas.events"}, "platereg.x": {"registry.consumer.store"}}
    assert _crossings(graph, "notifications", {"notifications", *SHARED}) == [
        "notifications.events -> registry.consumer.batch"]
    assert _crossings(graph, "platereg", set(SHARED)) == ["platereg.x -> registry.consumer.store"]
