"""The import graph of the whole tree (read with ast, imports inside functions included).

The rooms and what each may import:

* No import cycles between our modules, hidden in function bodies or not.
* A service package (registry/, ingest/, notifications/) imports its own modules,
  platereg/ and schemas/ only: never another service's internals, devtools/ or wiring/.
* The shared layers (platereg/, schemas/) import no service, no devtools/, no wiring/.
* Production code (platereg/, schemas/ and the services) never imports devtools/.
* devtools/ (embedded servers, Apache Kafka and Kafka Connect from their jars, the runner,
  the simulator, the mail catcher, Debian tool installs) is a client of platereg/,
  schemas/ and the services; never of wiring/.
* Only the composition root (wiring/) imports devtools/ and, of the production rooms,
  several services (devtools/ may, as their client): where one service's work runs
  inside another's, the host defines a hook and wiring/ plugs the other's function in,
  and ``wiring.cli`` (the ``platereg`` command line) imports every command module
  itself. Nothing imports wiring/.
* Inside registry/: the write side (registry/consumer/) and the read API (registry/api/)
  do not import each other; both use registry/domain.py (the status rules), which imports
  neither. registry/owner/ (the owner page and /v1/me) is the owner-facing part of the
  read side: it uses registry/api/ (its models, problems, audit) and registry/domain.py,
  never the consumer; registry/api/ imports it only where the app mounts it
  (``registry.api.app``).

bench/ (the benchmarks) and tests/ are outside these rules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("platereg", "schemas", "registry", "ingest", "notifications", "wiring", "devtools",
            "bench")
SERVICES = ("registry", "ingest", "notifications")
SHARED = ("platereg", "schemas")
PRODUCTION = (*SHARED, *SERVICES)
DEVTOOLS = "devtools"
COMPOSITION_ROOT = "wiring"

#: What each top-level package may import besides itself (bench/ is not ruled).
MAY_IMPORT: dict[str, set[str]] = {
    **{service: set(SHARED) for service in SERVICES},
    **{layer: set(SHARED) for layer in SHARED},
    DEVTOOLS: {*SHARED, *SERVICES},
    COMPOSITION_ROOT: {*SHARED, *SERVICES, DEVTOOLS},
}

#: The rooms of registry/ and the other rooms each may import ("registry" is registry/
#: itself: domain.py, the rules both sides share).
REGISTRY_ROOMS: dict[str, set[str]] = {
    "registry": set(),
    "registry.consumer": {"registry"},
    "registry.api": {"registry"},
    "registry.owner": {"registry", "registry.api"},
}
#: The one module of a room allowed to import another room beyond that: the API app
#: mounts the owner routes and page.
MOUNTS = {("registry.api.app", "registry.owner")}


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


def _room(module: str) -> str:
    """``registry.consumer.loop`` -> ``registry.consumer``; ``registry.domain`` -> ``registry``."""
    parts = module.split(".")
    return ".".join(parts[:2]) if ".".join(parts[:2]) in REGISTRY_ROOMS else parts[0]


def _room_crossings(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for m, targets in graph.items():
        room = _room(m)
        if room not in REGISTRY_ROOMS:
            continue
        for t in targets:
            other = _room(t)
            if (other in REGISTRY_ROOMS and other != room and other not in REGISTRY_ROOMS[room]
                    and (m, other) not in MOUNTS):
                found.append(f"{m} -> {t}")
    return sorted(found)


def _importers(graph: dict[str, set[str]], package: str) -> list[str]:
    """Modules outside ``package`` that import it."""
    return sorted(m for m, targets in graph.items() if _top(m) != package
                  and any(_top(t) == package for t in targets))


def _services_imported(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Per top-level package, the services it imports (itself excluded)."""
    found: dict[str, set[str]] = {}
    for m, targets in graph.items():
        found.setdefault(_top(m), set()).update(
            _top(t) for t in targets if _top(t) in SERVICES and _top(t) != _top(m))
    return found


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_each_package_imports_only_what_its_room_may(package: str) -> None:
    assert _crossings(_graph(), package, {package, *MAY_IMPORT[package]}) == []


def test_production_code_never_imports_devtools() -> None:
    assert [m for m in _importers(_graph(), DEVTOOLS) if _top(m) in PRODUCTION] == []


def test_nothing_imports_the_composition_root() -> None:
    assert _importers(_graph(), COMPOSITION_ROOT) == []


def test_only_the_composition_root_and_devtools_import_several_services() -> None:
    several = sorted(p for p, services in _services_imported(_graph()).items()
                     if len(services) > 1 and p != "bench")
    assert set(several) <= {COMPOSITION_ROOT, DEVTOOLS}
    assert COMPOSITION_ROOT in several


def test_the_registry_rooms_keep_apart() -> None:
    assert _room_crossings(_graph()) == []


def test_the_composition_root_imports_every_command_module() -> None:
    # The registry consumer's batch hook is the notices' function, plugged in here; each
    # command module is imported by an import statement (no importlib), which this test sees.
    assert {"notifications.events", "registry.consumer.cli", "registry.consumer.sources_cli",
            "registry.api.cli", "ingest.cli", "notifications.cli", "devtools.cli"} \
        <= _graph()["wiring.cli"]


#: One planted violation of each rule, in an otherwise legal graph.
PLANTED = {
    "notifications.events": {"registry.consumer.batch", "schemas.fold"},
    "schemas.fold": {"schemas.events"},
    "platereg.x": {"registry.consumer.store"},
    "platereg.y": {"registry.api.app", "ingest.api"},
    "platereg.db": {"devtools.embedded"},
    "ingest.cli": {"devtools.simulate", "platereg.commands"},
    "devtools.runner": {"wiring.cli", "registry.consumer.service", "ingest.api"},
    "wiring.cli": {"devtools.cli", "registry.api.cli", "ingest.cli"},
    "registry.consumer.loop": {"registry.api.lookups", "registry.domain"},
    "registry.api.routes.plates": {"registry.owner.page", "registry.domain"},
    "registry.api.app": {"registry.owner.app"},
    "registry.owner.routes": {"registry.api.models", "registry.consumer.store"},
    "registry.domain": {"registry.api.lookups"},
}


def test_a_planted_crossing_is_found() -> None:
    assert _crossings(PLANTED, "notifications", {"notifications", *SHARED}) == [
        "notifications.events -> registry.consumer.batch"]
    assert _crossings(PLANTED, "platereg", set(SHARED)) == [
        "platereg.db -> devtools.embedded", "platereg.x -> registry.consumer.store",
        "platereg.y -> ingest.api", "platereg.y -> registry.api.app"]
    assert _crossings(PLANTED, "ingest", {"ingest", *SHARED}) == [
        "ingest.cli -> devtools.simulate"]
    assert _crossings(PLANTED, DEVTOOLS, {DEVTOOLS, *MAY_IMPORT[DEVTOOLS]}) == [
        "devtools.runner -> wiring.cli"]
    assert [m for m in _importers(PLANTED, DEVTOOLS) if _top(m) in PRODUCTION] == [
        "ingest.cli", "platereg.db"]
    assert _importers(PLANTED, COMPOSITION_ROOT) == ["devtools.runner"]
    assert _room_crossings(PLANTED) == [
        "registry.api.routes.plates -> registry.owner.page",
        "registry.consumer.loop -> registry.api.lookups",
        "registry.domain -> registry.api.lookups",
        "registry.owner.routes -> registry.consumer.store"]
    several = {p for p, s in _services_imported(PLANTED).items() if len(s) > 1}
    assert several == {COMPOSITION_ROOT, DEVTOOLS, "platereg"}
