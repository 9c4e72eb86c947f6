"""The floors of the house (docs/architecture.md): no import goes upward, no package cycle.

A small AST walk over the first-party packages. Every import counts, a function-local one too:
a lazy import hides a dependency from the reader, not from the design. Tests, bench/ and
scripts/ are outside the house and may import anything.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# The floor of each package: a module may import its own package and packages on lower floors,
# never one on its own floor or above. docs/architecture.md draws the same picture.
FLOORS: dict[str, int] = {
    "weldr_agent": 0,   # the base: settings, runner, auth, tenant rule, lifecycle, health
    "mounts": 1,        # storage: S3 + JuiceFS mounts, the workspace door (workspace_fs)
    "egress": 2,        # per-bucket outbound policy and its iptables chains
    "sandbox": 3,       # OCI config, runtime, netns + firewall, pools, bucket sandbox, sandboxd
    "previews": 4,      # previews, port leases, the proxy
    "commands": 4,      # POST /exec and background commands
    "workflows": 5,     # projects, runs, the engine, integrations
    # The clients (issue #14's branch): above the server, so they may only look down.
    "sdk": 6,
    "mcp_server": 6,
}

# The base's composition root: the modules that wire the apps together (settings names them,
# the URLconf and the websocket routing include them). Nothing else of the base may.
COMPOSITION_ROOT = {"weldr_agent.settings", "weldr_agent.urls", "weldr_agent.routing",
                    "weldr_agent.asgi"}

# Cycles between modules of one package that are known and allowed for now: each entry is the
# set of modules of one strongly connected component. Shrink this list; never grow it. Empty
# since issue #16 broke the last one (workflows: engine -> integrations.services -> services ->
# worker -> engine; what the three needed of each other is in workflows/branches.py now).
KNOWN_CYCLES: list[set[str]] = []


def modules() -> dict[str, Path]:
    """Every first-party module, by dotted name."""
    found = {}
    for package in FLOORS:
        root = REPO / package
        if not (root / "__init__.py").is_file():
            continue
        for path in root.rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(first-party module imported, line) for every import statement anywhere in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from a import b` is the module a.b when there is one, else a name in a.
            targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known
                       else node.module for alias in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] in FLOORS:
                yield target, node.lineno


def package(module: str) -> str:
    return module.split(".")[0]


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for target, _ in imports(path, known):
            # The nearest first-party module (a name imported from a module is that module).
            while target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in known and target != name:
                edges[name].add(target)
    return edges


def upward_imports() -> list[str]:
    known = modules()
    found = []
    for name, path in sorted(known.items()):
        if name in COMPOSITION_ROOT:
            continue
        here = package(name)
        for target, line in imports(path, known):
            there = package(target)
            if there != here and FLOORS[there] >= FLOORS[here]:
                found.append(f"{path.relative_to(REPO)}:{line}: {here} (floor {FLOORS[here]}) "
                             f"imports {target} (floor {FLOORS[there]})")
    return found


def cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

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
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_every_package_has_a_floor() -> None:
    # given the top-level Python packages of the repository
    packages = {path.parent.name for path in REPO.glob("*/__init__.py")}

    # then each one is on a floor (or is outside the house: the tests and benchmarks)
    assert packages - {"tests", "bench"} <= set(FLOORS), packages - set(FLOORS)


def test_no_import_goes_upward() -> None:
    assert upward_imports() == []


def test_no_package_imports_its_own_floor_or_above_through_a_cycle() -> None:
    # when the module graph is walked
    components = cycles(graph())

    # then no cycle crosses packages (the floors forbid it), and within a package only the
    # known ones remain
    crossing = [sorted(c) for c in components if len({package(m) for m in c}) > 1]
    assert crossing == []
    unknown = [sorted(c) for c in components if not any(c <= known for known in KNOWN_CYCLES)]
    assert unknown == []


def test_the_walk_sees_a_function_local_import_and_a_cycle() -> None:
    # given a module graph with a cycle and an upward import hidden in a function
    tree = ast.parse("def f():\n    from workflows import engine\n")
    found = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]

    # then the walk finds both (a check that cannot fail would be worthless)
    assert found and found[0].module == "workflows"
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [{"a", "b"}]
